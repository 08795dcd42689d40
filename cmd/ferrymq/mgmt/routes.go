package mgmt

// routes lists the API, one route a line, so that additions from other
// files merge cleanly. Level is the least tag a user needs (auth.go);
// handlers narrow further by vhost permissions where RabbitMQ does.
func (s *Server) routes() {
	s.Route("GET", "/api/overview", Management, s.overview)
	s.Route("GET", "/api/whoami", Management, s.whoami)
	s.Route("GET", "/api/nodes", Monitoring, s.nodes)
	s.Route("GET", "/api/nodes/{node}", Monitoring, s.nodeOne)
	s.Route("GET", "/api/connections", Management, s.connections)
	s.Route("GET", "/api/connections/{name}", Management, s.connection)
	s.Route("DELETE", "/api/connections/{name}", Management, s.closeConnection)
	s.Route("GET", "/api/connections/{name}/channels", Management, s.connectionChannels)
	s.Route("GET", "/api/vhosts/{vhost}/connections", Management, s.vhostConnections)
	s.Route("GET", "/api/channels", Management, s.channels)
	s.Route("GET", "/api/vhosts/{vhost}/channels", Management, s.vhostChannels)
	s.Route("GET", "/api/channels/{name}", Management, s.channel)
	s.Route("GET", "/api/consumers", Management, s.consumers)
	s.Route("GET", "/api/consumers/{vhost}", Management, s.vhostConsumers)
	s.Route("GET", "/api/health/checks/alarms", Monitoring, s.healthAlarms)
	s.Route("GET", "/api/health/checks/local-alarms", Monitoring, s.healthAlarms)
}
