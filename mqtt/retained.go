package mqtt

import "github.com/ferrymq/ferrymq/core"

// RetainStore keeps retained messages across restarts. persistence.Store
// implements it; nil keeps them in memory only.
type RetainStore interface {
	// PutRetained replaces the retained message of a topic and returns
	// once it is on disk.
	PutRetained(vhost, topic string, msg *core.Message) error
	// DeleteRetained removes a topic's retained message (a retained
	// publish with an empty payload) and returns once that is on disk.
	DeleteRetained(vhost, topic string) error
	// RetainedMessages calls fn for every stored retained message.
	RetainedMessages(fn func(vhost, topic string, msg *core.Message) error) error
}
