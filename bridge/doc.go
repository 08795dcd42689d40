// Package bridge will hold links to upstream brokers with store-and-forward:
// messages are kept locally until the upstream confirms them, across
// reconnects. A later issue fills it in.
package bridge
