package mgmt

// Definitions: RabbitMQ's definitions document (GET/POST /api/definitions,
// rabbitmqctl export_definitions, rabbitmqadmin export/import), converted
// to and from core's users, vhosts, permissions, exchanges, queues and
// bindings. The conversion is here, apart from HTTP, so that it is tested
// on its own.
//
// What ferrymq cannot express is imported as far as it can be and
// reported, never silently dropped: each import returns warnings (the
// HTTP answer carries them, and the log has each at WARN). RabbitMQ
// refuses a whole import for a definition it cannot validate, which would
// make every export of a RabbitMQ with a policy unusable here; an
// operator migrating wants the rest imported and a list of what to
// redo by hand. Policies are the main case: their effect would silently
// change (a TTL or a length limit gone), so each is named with the queue
// arguments that do the same.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/ferrymq/ferrymq/core"
)

// Definitions is RabbitMQ's definitions document, as exported by GET
// /api/definitions. Every list is present (possibly empty) in an export.
type Definitions struct {
	RabbitVersion    string              `json:"rabbit_version,omitempty"`
	RabbitMQVersion  string              `json:"rabbitmq_version,omitempty"`
	ProductName      string              `json:"product_name,omitempty"`
	ProductVersion   string              `json:"product_version,omitempty"`
	Users            []DefUser           `json:"users"`
	VHosts           []DefVHost          `json:"vhosts"`
	Permissions      []DefPermission     `json:"permissions"`
	TopicPermissions []DefTopicPerm      `json:"topic_permissions"`
	Parameters       []DefParameter      `json:"parameters"`
	GlobalParameters []DefGlobalParam    `json:"global_parameters"`
	Policies         []DefPolicy         `json:"policies"`
	Queues           []DefQueue          `json:"queues"`
	Exchanges        []DefExchange       `json:"exchanges"`
	Bindings         []DefBinding        `json:"bindings"`
	extra            map[string]struct{} // top-level keys ferrymq does not know
}

// VHostDefinitions is the per-vhost form (GET /api/definitions/{vhost}):
// no users, vhosts or permissions, and entries without a vhost field.
type VHostDefinitions struct {
	RabbitVersion   string         `json:"rabbit_version,omitempty"`
	RabbitMQVersion string         `json:"rabbitmq_version,omitempty"`
	ProductName     string         `json:"product_name,omitempty"`
	ProductVersion  string         `json:"product_version,omitempty"`
	Parameters      []DefParameter `json:"parameters"`
	Policies        []DefPolicy    `json:"policies"`
	Queues          []DefQueue     `json:"queues"`
	Exchanges       []DefExchange  `json:"exchanges"`
	Bindings        []DefBinding   `json:"bindings"`
}

// DefUser is a user. Tags are a list in RabbitMQ 3.9 and later, a
// comma-separated string before; both are read.
type DefUser struct {
	Name             string         `json:"name"`
	PasswordHash     string         `json:"password_hash"`
	Password         string         `json:"password,omitempty"` // import only: hashed here
	HashingAlgorithm string         `json:"hashing_algorithm"`
	Tags             defTags        `json:"tags"`
	Limits           map[string]any `json:"limits"`
}

// defTags reads a list or a comma-separated string; it is written as a list.
type defTags []string

func (t *defTags) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*t = nil
		for _, tag := range strings.Split(s, ",") {
			if tag = strings.TrimSpace(tag); tag != "" {
				*t = append(*t, tag)
			}
		}
		return nil
	}
	var l []string
	if err := json.Unmarshal(b, &l); err != nil {
		return fmt.Errorf("tags: want a list or a comma-separated string: %w", err)
	}
	*t = l
	return nil
}

func (t defTags) MarshalJSON() ([]byte, error) {
	if t == nil {
		return []byte("[]"), nil
	}
	return json.Marshal([]string(t))
}

// DefVHost is a vhost; ferrymq keeps no metadata (description, tags,
// default queue type) and exports the name and limits.
type DefVHost struct {
	Name     string         `json:"name"`
	Limits   []any          `json:"limits,omitempty"`
	Metadata map[string]any `json:"metadata,omitempty"`
}

// DefPermission is rabbitmqctl set_permissions.
type DefPermission struct {
	User      string `json:"user"`
	VHost     string `json:"vhost"`
	Configure string `json:"configure"`
	Write     string `json:"write"`
	Read      string `json:"read"`
}

// DefTopicPerm is rabbitmqctl set_topic_permissions.
type DefTopicPerm struct {
	User     string `json:"user"`
	VHost    string `json:"vhost"`
	Exchange string `json:"exchange"`
	Write    string `json:"write"`
	Read     string `json:"read"`
}

// DefParameter is a runtime parameter; of these ferrymq knows vhost-limits.
type DefParameter struct {
	Value     any    `json:"value"`
	VHost     string `json:"vhost,omitempty"`
	Component string `json:"component"`
	Name      string `json:"name"`
}

// DefGlobalParam is a global runtime parameter.
type DefGlobalParam struct {
	Name  string `json:"name"`
	Value any    `json:"value"`
}

// DefPolicy is a policy; ferrymq has none (see the file's comment).
type DefPolicy struct {
	VHost      string         `json:"vhost,omitempty"`
	Name       string         `json:"name"`
	Pattern    string         `json:"pattern"`
	ApplyTo    string         `json:"apply-to"`
	Definition map[string]any `json:"definition"`
	Priority   int            `json:"priority"`
}

// DefQueue is a queue.
type DefQueue struct {
	Name       string         `json:"name"`
	VHost      string         `json:"vhost,omitempty"`
	Durable    bool           `json:"durable"`
	AutoDelete bool           `json:"auto_delete"`
	Arguments  map[string]any `json:"arguments"`
}

// DefExchange is an exchange.
type DefExchange struct {
	Name       string         `json:"name"`
	VHost      string         `json:"vhost,omitempty"`
	Type       string         `json:"type"`
	Durable    bool           `json:"durable"`
	AutoDelete bool           `json:"auto_delete"`
	Internal   bool           `json:"internal"`
	Arguments  map[string]any `json:"arguments"`
}

// DefBinding is a binding; DestinationType is "queue" or "exchange".
type DefBinding struct {
	Source          string         `json:"source"`
	VHost           string         `json:"vhost,omitempty"`
	Destination     string         `json:"destination"`
	DestinationType string         `json:"destination_type"`
	RoutingKey      string         `json:"routing_key"`
	Arguments       map[string]any `json:"arguments"`
}

// hashSHA256 is the one hashing algorithm ferrymq checks passwords with.
const hashSHA256 = "rabbit_password_hashing_sha256"

// defKnownKeys are the top-level keys of a definitions document.
var defKnownKeys = map[string]bool{
	"rabbit_version": true, "rabbitmq_version": true, "product_name": true, "product_version": true,
	"users": true, "vhosts": true, "permissions": true, "topic_permissions": true, "parameters": true,
	"global_parameters": true, "policies": true, "queues": true, "exchanges": true, "bindings": true,
	// Read and ignored: they describe the exporting cluster.
	"explanation": true,
}

// ParseDefinitions reads a definitions document. Numbers in arguments
// keep their integer type; unknown top-level keys are kept to be reported
// by the import.
func ParseDefinitions(r io.Reader) (*Definitions, error) {
	raw, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("definitions: %w", err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, fmt.Errorf("definitions: not a JSON object: %w", err)
	}
	d := &Definitions{extra: map[string]struct{}{}}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	if err := dec.Decode(d); err != nil {
		return nil, fmt.Errorf("definitions: %w", err)
	}
	for k := range top {
		if !defKnownKeys[k] {
			d.extra[k] = struct{}{}
		}
	}
	return d, nil
}

// ParseVHostDefinitions reads the per-vhost form; a full document is read
// too, its vhost fields ignored.
func ParseVHostDefinitions(r io.Reader) (*VHostDefinitions, error) {
	d, err := ParseDefinitions(r)
	if err != nil {
		return nil, err
	}
	return &VHostDefinitions{Parameters: d.Parameters, Policies: d.Policies, Queues: d.Queues, Exchanges: d.Exchanges, Bindings: d.Bindings}, nil
}

// DefinitionsSource is what definitions are exported from and imported
// into.
type DefinitionsSource struct {
	Broker  *core.Broker
	Users   *core.Users // nil: no users or permissions exported or imported
	Version string      // ferrymq's version, as rabbit_version
}

// bridgeQueuePrefix names the bridges' store-and-forward queues, which
// the bridge configuration owns: they are not exported.
const bridgeQueuePrefix = "bridge."

// Export returns every vhost's definitions and the users', as RabbitMQ's
// GET /api/definitions: exchanges but the default and amq.* ones; queues
// but exclusive ones (and the bridges'); their bindings.
func (src DefinitionsSource) Export() *Definitions {
	d := src.ExportAccess()
	for _, vh := range d.VHosts {
		v := src.Broker.VHost(vh.Name)
		if v == nil {
			continue // deleted meanwhile
		}
		vd := exportVHost(v)
		for i := range vd.Queues {
			vd.Queues[i].VHost = vh.Name
		}
		for i := range vd.Exchanges {
			vd.Exchanges[i].VHost = vh.Name
		}
		for i := range vd.Bindings {
			vd.Bindings[i].VHost = vh.Name
		}
		d.Queues = append(d.Queues, vd.Queues...)
		d.Exchanges = append(d.Exchanges, vd.Exchanges...)
		d.Bindings = append(d.Bindings, vd.Bindings...)
	}
	return d
}

// ExportAccess returns the definitions that RabbitMQ keeps in its
// internal database and ferrymq's store does not: users, vhosts,
// permissions, topic permissions and vhost limits, without the topology
// (cheap with many queues).
func (src DefinitionsSource) ExportAccess() *Definitions {
	d := &Definitions{
		RabbitVersion: src.Version, RabbitMQVersion: src.Version, ProductName: "ferrymq", ProductVersion: src.Version,
		Users: []DefUser{}, VHosts: []DefVHost{}, Permissions: []DefPermission{}, TopicPermissions: []DefTopicPerm{},
		Parameters: []DefParameter{}, GlobalParameters: []DefGlobalParam{}, Policies: []DefPolicy{},
		Queues: []DefQueue{}, Exchanges: []DefExchange{}, Bindings: []DefBinding{},
	}
	if src.Users != nil {
		for _, u := range src.Users.List() {
			du := DefUser{Name: u.Name, PasswordHash: u.PasswordHash, HashingAlgorithm: hashSHA256, Tags: defTags(u.Tags), Limits: map[string]any{}}
			if u.MaxConnections > 0 {
				du.Limits["max-connections"] = u.MaxConnections
			}
			if u.MaxChannels > 0 {
				du.Limits["max-channels"] = u.MaxChannels
			}
			d.Users = append(d.Users, du)
		}
		for _, p := range src.Users.PermissionList() {
			d.Permissions = append(d.Permissions, DefPermission{User: p.User, VHost: p.VHost, Configure: p.Configure, Write: p.Write, Read: p.Read})
		}
		for _, p := range src.Users.TopicPermissionList() {
			d.TopicPermissions = append(d.TopicPermissions, DefTopicPerm{User: p.User, VHost: p.VHost, Exchange: p.Exchange, Write: p.Write, Read: p.Read})
		}
	}
	for _, name := range src.Broker.VHostNames() {
		v := src.Broker.VHost(name)
		if v == nil {
			continue
		}
		d.VHosts = append(d.VHosts, DefVHost{Name: name})
		if p, ok := limitsParameter(v); ok {
			p.VHost = name
			d.Parameters = append(d.Parameters, p)
		}
	}
	return d
}

// limitsParameter is a vhost's limits as RabbitMQ's vhost-limits runtime
// parameter; false when it has none.
func limitsParameter(v *core.VHost) (DefParameter, bool) {
	l := v.Limits()
	if l == (core.VHostLimits{}) {
		return DefParameter{}, false
	}
	val := map[string]any{}
	if l.MaxConnections > 0 {
		val["max-connections"] = l.MaxConnections
	}
	if l.MaxQueues > 0 {
		val["max-queues"] = l.MaxQueues
	}
	return DefParameter{Component: "vhost-limits", Name: "limits", Value: val}, true
}

// ExportVHost returns one vhost's definitions, as RabbitMQ's GET
// /api/definitions/{vhost}; false if there is no such vhost.
func (src DefinitionsSource) ExportVHost(vhost string) (*VHostDefinitions, bool) {
	v := src.Broker.VHost(vhost)
	if v == nil {
		return nil, false
	}
	d := exportVHost(v)
	d.RabbitVersion, d.RabbitMQVersion, d.ProductName, d.ProductVersion = src.Version, src.Version, "ferrymq", src.Version
	return d, true
}

func exportVHost(v *core.VHost) *VHostDefinitions {
	d := &VHostDefinitions{Parameters: []DefParameter{}, Policies: []DefPolicy{}, Queues: []DefQueue{}, Exchanges: []DefExchange{}, Bindings: []DefBinding{}}
	if p, ok := limitsParameter(v); ok {
		d.Parameters = append(d.Parameters, p)
	}
	for _, x := range v.ExchangeList() {
		if x.Name == "" || core.IsReservedName(x.Name) {
			continue
		}
		d.Exchanges = append(d.Exchanges, DefExchange{Name: x.Name, Type: x.Kind, Durable: x.Durable, AutoDelete: x.AutoDelete,
			Internal: x.Internal, Arguments: defJSONTable(x.Arguments)})
	}
	skipped := map[string]bool{}
	for _, q := range v.QueueList() {
		s := q.Snapshot()
		if s.Exclusive || strings.HasPrefix(s.Name, bridgeQueuePrefix) {
			skipped[s.Name] = true
			continue
		}
		d.Queues = append(d.Queues, DefQueue{Name: s.Name, Durable: s.Durable, AutoDelete: s.AutoDelete, Arguments: defJSONTable(s.Arguments)})
	}
	for _, b := range v.BindingList() {
		if !b.ToExchange && skipped[b.Destination] {
			continue
		}
		typ := "queue"
		if b.ToExchange {
			typ = "exchange"
		}
		d.Bindings = append(d.Bindings, DefBinding{Source: b.Source, Destination: b.Destination, DestinationType: typ,
			RoutingKey: b.RoutingKey, Arguments: defJSONTable(b.Arguments)})
	}
	// Stable order, so that two exports of the same state are equal.
	slices.SortFunc(d.Bindings, func(a, b DefBinding) int {
		return cmpStrings(a.Source, b.Source, a.DestinationType, b.DestinationType, a.Destination, b.Destination,
			a.RoutingKey, b.RoutingKey, defKey(a.Arguments), defKey(b.Arguments))
	})
	return d
}

// cmpStrings compares pairs (a0, b0, a1, b1, ...) in order.
func cmpStrings(pairs ...string) int {
	for i := 0; i+1 < len(pairs); i += 2 {
		if c := strings.Compare(pairs[i], pairs[i+1]); c != 0 {
			return c
		}
	}
	return 0
}

// defKey is a binding's arguments as sortable text.
func defKey(m map[string]any) string {
	b, _ := json.Marshal(m)
	return string(b)
}

// ImportResult is what an import did not apply as given.
type ImportResult struct {
	// Warnings name each definition not applied, or applied otherwise
	// than asked, and why.
	Warnings []string `json:"warnings"`
}

func (r *ImportResult) warn(format string, args ...any) {
	r.Warnings = append(r.Warnings, fmt.Sprintf(format, args...))
}

// Import applies a definitions document, as RabbitMQ's POST
// /api/definitions: vhosts, users, permissions, vhost limits, then
// exchanges, queues and bindings. It adds and updates, never deletes. An
// existing exchange or queue declared otherwise is kept as it is, with a
// warning. What ferrymq has no equivalent for (policies, most runtime
// parameters, password hashes other than SHA-256, unsupported exchange
// types) is reported in the result's warnings. The error lists the
// definitions that are invalid (a bad password hash, a bad permission
// pattern, a queue argument core refuses, ...); the valid ones are
// applied regardless, as RabbitMQ does up to its first failure.
func (src DefinitionsSource) Import(d *Definitions) (ImportResult, error) {
	var res ImportResult
	var errs []error
	for k := range d.extra {
		res.warn("top-level key %q ignored: ferrymq does not know it", k)
	}
	for _, vh := range d.VHosts {
		if vh.Name == "" {
			errs = append(errs, errors.New("vhost with no name"))
			continue
		}
		src.Broker.AddVHost(vh.Name)
	}
	if src.Users == nil && (len(d.Users) > 0 || len(d.Permissions) > 0 || len(d.TopicPermissions) > 0) {
		res.warn("users and permissions not imported: ferrymq is not using its internal user database")
	} else if src.Users != nil {
		errs = append(errs, src.importUsers(d, &res)...)
	}
	for _, gp := range d.GlobalParameters {
		switch gp.Name {
		case "internal_cluster_id", "cluster_name":
			// The exporting cluster's identity: nothing to carry over.
		default:
			res.warn("global parameter %q not imported: ferrymq has no global parameters", gp.Name)
		}
	}
	byVHost := map[string]*VHostDefinitions{}
	at := func(vhost string) *VHostDefinitions {
		if vhost == "" {
			vhost = "/"
		}
		vd := byVHost[vhost]
		if vd == nil {
			vd = &VHostDefinitions{}
			byVHost[vhost] = vd
		}
		return vd
	}
	for _, p := range d.Parameters {
		at(p.VHost).Parameters = append(at(p.VHost).Parameters, p)
	}
	for _, p := range d.Policies {
		at(p.VHost).Policies = append(at(p.VHost).Policies, p)
	}
	for _, x := range d.Exchanges {
		at(x.VHost).Exchanges = append(at(x.VHost).Exchanges, x)
	}
	for _, q := range d.Queues {
		at(q.VHost).Queues = append(at(q.VHost).Queues, q)
	}
	for _, b := range d.Bindings {
		at(b.VHost).Bindings = append(at(b.VHost).Bindings, b)
	}
	for _, name := range slices.Sorted(maps.Keys(byVHost)) {
		v := src.Broker.VHost(name)
		if v == nil {
			errs = append(errs, fmt.Errorf("vhost '%s': not defined (add it to vhosts)", name))
			continue
		}
		errs = append(errs, importVHost(v, byVHost[name], &res)...)
	}
	return res, errors.Join(errs...)
}

// ImportVHost applies the per-vhost form into an existing vhost; see
// Import.
func (src DefinitionsSource) ImportVHost(vhost string, d *VHostDefinitions) (ImportResult, error) {
	var res ImportResult
	v := src.Broker.VHost(vhost)
	if v == nil {
		return res, fmt.Errorf("vhost '%s': not found", vhost)
	}
	errs := importVHost(v, d, &res)
	return res, errors.Join(errs...)
}

func (src DefinitionsSource) importUsers(d *Definitions, res *ImportResult) []error {
	var errs []error
	imported := map[string]bool{}
	for _, u := range d.Users {
		if u.Name == "" {
			errs = append(errs, errors.New("user with no name"))
			continue
		}
		hash := u.PasswordHash
		switch {
		case u.Password != "" && hash == "":
			hash = core.HashPassword(u.Password)
		case hash == "":
			// RabbitMQ's users without a password (certificate logins).
		case u.HashingAlgorithm != "" && u.HashingAlgorithm != hashSHA256:
			res.warn("user '%s' not imported: its password hash is %s; ferrymq checks %s only (set its password again, e.g. rabbitmqadmin declare user)",
				u.Name, u.HashingAlgorithm, hashSHA256)
			continue
		}
		spec := core.UserSpec{Name: u.Name, PasswordHash: hash, Tags: []string(u.Tags)}
		if n, ok := defLimit(u.Limits, "max-connections"); ok {
			spec.MaxConnections = n
		}
		if n, ok := defLimit(u.Limits, "max-channels"); ok {
			spec.MaxChannels = n
		}
		// A user that existed keeps its loopback restriction (guest).
		if old, ok := src.Users.User(u.Name); ok {
			spec.LoopbackOnly = old.LoopbackOnly
		}
		if err := src.Users.Put(spec); err != nil {
			errs = append(errs, err)
			continue
		}
		imported[u.Name] = true
	}
	for _, p := range d.Permissions {
		vhost := defVHostName(p.VHost)
		err := src.Users.SetPermissions(p.User, vhost, core.VHostPermissions{Configure: p.Configure, Write: p.Write, Read: p.Read})
		if err != nil {
			errs = append(errs, fmt.Errorf("permissions of user '%s' in vhost '%s': %w", p.User, vhost, err))
		}
	}
	for _, p := range d.TopicPermissions {
		vhost := defVHostName(p.VHost)
		err := src.Users.SetTopicPermissions(p.User, vhost, core.TopicPermissions{Exchange: p.Exchange, Write: p.Write, Read: p.Read})
		if err != nil {
			errs = append(errs, fmt.Errorf("topic permissions of user '%s' in vhost '%s': %w", p.User, vhost, err))
		}
	}
	return errs
}

func defVHostName(v string) string {
	if v == "" {
		return "/"
	}
	return v
}

// policyArgs are the policy keys a queue argument does the same as.
var policyArgs = map[string]string{
	"message-ttl": "x-message-ttl", "expires": "x-expires", "max-length": "x-max-length",
	"max-length-bytes": "x-max-length-bytes", "overflow": "x-overflow",
	"dead-letter-exchange": "x-dead-letter-exchange", "dead-letter-routing-key": "x-dead-letter-routing-key",
	"max-priority": "x-max-priority", "single-active-consumer": "x-single-active-consumer",
}

func importVHost(v *core.VHost, d *VHostDefinitions, res *ImportResult) []error {
	var errs []error
	vh := v.Name()
	for _, p := range d.Parameters {
		if p.Component != "vhost-limits" {
			res.warn("parameter '%s' of component '%s' in vhost '%s' not imported: ferrymq has no %s (runtime parameters other than vhost-limits are not supported)",
				p.Name, p.Component, vh, p.Component)
			continue
		}
		val, _ := p.Value.(map[string]any)
		var l core.VHostLimits
		for k, raw := range val {
			n, ok := defInt(raw)
			switch {
			case !ok:
				errs = append(errs, fmt.Errorf("vhost-limits of vhost '%s': %s is not an integer", vh, k))
			case k == "max-connections":
				l.MaxConnections = int(max(n, 0))
			case k == "max-queues":
				l.MaxQueues = int(max(n, 0))
			default:
				res.warn("vhost-limits of vhost '%s': %s not imported: ferrymq has no such limit", vh, k)
			}
		}
		v.SetLimits(l)
	}
	for _, p := range d.Policies {
		var alt []string
		var none []string
		for _, k := range slices.Sorted(maps.Keys(p.Definition)) {
			if a, ok := policyArgs[k]; ok {
				alt = append(alt, fmt.Sprintf("%s=%v", a, p.Definition[k]))
			} else {
				none = append(none, k)
			}
		}
		msg := fmt.Sprintf("policy '%s' in vhost '%s' (pattern '%s', apply-to %s) not applied: ferrymq has no policies", p.Name, vh, p.Pattern, defOr(p.ApplyTo, "all"))
		if len(alt) > 0 {
			msg += "; declare the queues with arguments " + strings.Join(alt, ", ") + " instead"
		}
		if len(none) > 0 {
			msg += "; no equivalent for " + strings.Join(none, ", ")
		}
		res.Warnings = append(res.Warnings, msg)
	}
	for _, x := range d.Exchanges {
		switch {
		case x.Name == "":
			continue
		case core.IsReservedName(x.Name):
			res.warn("exchange '%s' in vhost '%s' skipped: names starting with amq. are reserved", x.Name, vh)
			continue
		}
		err := v.DeclareExchange(core.ExchangeDecl{Name: x.Name, Kind: x.Type, Durable: x.Durable, AutoDelete: x.AutoDelete,
			Internal: x.Internal, Arguments: defTable(x.Arguments)})
		var ce *core.Error
		switch {
		case err == nil:
		case errors.As(err, &ce) && ce.Code == core.CodeCommandInvalid:
			res.warn("exchange '%s' in vhost '%s' not imported: %s (ferrymq has direct, fanout, topic and headers exchanges)", x.Name, vh, ce.Text)
		case errors.As(err, &ce) && ce.Code == core.CodePreconditionFailed && v.HasExchange(x.Name):
			res.warn("exchange '%s' in vhost '%s' exists already with other properties; kept as it is: %s", x.Name, vh, ce.Text)
		default:
			errs = append(errs, fmt.Errorf("exchange '%s' in vhost '%s': %w", x.Name, vh, err))
		}
	}
	for _, q := range d.Queues {
		args := defTable(q.Arguments)
		if t, _ := args["x-queue-type"].(string); t != "" && t != "classic" {
			res.warn("queue '%s' in vhost '%s' is a %s queue; ferrymq has classic queues only and declared it as one (its x-queue-type argument is kept)", q.Name, vh, t)
		}
		if _, err := v.DeclareQueue(core.QueueDecl{Name: q.Name, Durable: q.Durable, AutoDelete: q.AutoDelete, Arguments: args}); err != nil {
			var ce *core.Error
			if errors.As(err, &ce) && ce.Code == core.CodePreconditionFailed && v.Queue(q.Name) != nil {
				res.warn("queue '%s' in vhost '%s' exists already with other properties; kept as it is: %s", q.Name, vh, ce.Text)
				continue
			}
			errs = append(errs, fmt.Errorf("queue '%s' in vhost '%s': %w", q.Name, vh, err))
		}
	}
	for _, b := range d.Bindings {
		var err error
		args := defTable(b.Arguments)
		switch b.DestinationType {
		case "queue", "":
			err = v.BindQueue(b.Destination, b.Source, b.RoutingKey, args, 0)
		case "exchange":
			err = v.BindExchange(b.Destination, b.Source, b.RoutingKey, args)
		default:
			err = fmt.Errorf("destination_type %q (want queue or exchange)", b.DestinationType)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("binding of %s '%s' to exchange '%s' with key '%s' in vhost '%s': %w",
				defOr(b.DestinationType, "queue"), b.Destination, b.Source, b.RoutingKey, vh, err))
		}
	}
	return errs
}

func defOr(s, dflt string) string {
	if s == "" {
		return dflt
	}
	return s
}

// defLimit reads a user limit; RabbitMQ writes -1 or leaves it out for
// none.
func defLimit(m map[string]any, key string) (int, bool) {
	n, ok := defInt(m[key])
	if !ok || n <= 0 {
		return 0, false
	}
	return int(n), true
}

func defInt(v any) (int64, bool) {
	switch n := v.(type) {
	case json.Number:
		i, err := n.Int64()
		return i, err == nil
	case float64:
		return int64(n), n == float64(int64(n))
	case int:
		return int64(n), true
	case int64:
		return n, true
	case string: // RabbitMQ's UI sends limits as strings
		var i int64
		_, err := fmt.Sscan(n, &i)
		return i, err == nil
	}
	return 0, false
}

// defTable converts JSON arguments to an AMQP table: integers become
// int64 (long-long), other numbers float64, objects tables.
func defTable(m map[string]any) core.Table {
	if len(m) == 0 {
		return nil
	}
	t := make(core.Table, len(m))
	for k, v := range m {
		t[k] = defValue(v)
	}
	return t
}

func defValue(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	case map[string]any:
		return defTable(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = defValue(e)
		}
		return out
	}
	return v
}

// defJSONTable is jsonTable with an empty object for no arguments, as
// RabbitMQ's export writes "arguments": {}.
func defJSONTable(t core.Table) map[string]any {
	if t == nil {
		return map[string]any{}
	}
	return jsonTable(t)
}
