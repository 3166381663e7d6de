package master

// TransportStats are counters of the master's ZeroMQ ports, for operators and hostile tests.
type TransportStats struct {
	RequestConns, RequestPending int   // live connections and unfinished handshakes, request port
	PublishConns, PublishPending int   // the same, publish port
	Subscriptions                int   // subscriptions of all subscribers
	NotReadingDropped            int64 // request peers disconnected because they did not read replies
	TrustedThrottled             int64 // messages of authenticated connections that waited for their rate
	SubscribersRefused           int64 // subscribers disconnected for subscriptions over the limits, or a false or taken credential
	SubscribersUnadmitted        int64 // subscribers disconnected for showing no credential in time
	AcceptErrors                 int64 // failed Accepts on both ports (EMFILE...), each retried
	Evicted                      int64 // connections of both ports closed to make room for a new one
	Handshakes                   int64 // connections of both ports that completed a ZMTP handshake
	Challenges                   int   // outstanding hello challenges
}

// TransportStats returns the counters of the master's ports.
func (m *Master) TransportStats() TransportStats {
	var s TransportStats
	s.RequestConns, s.RequestPending = m.router.Conns()
	s.PublishConns, s.PublishPending = m.pub.Conns()
	s.Subscriptions = m.pub.Subscriptions()
	s.NotReadingDropped = m.router.Dropped.Load()
	s.TrustedThrottled = m.router.Throttled.Load()
	s.SubscribersRefused = m.pub.Refused.Load()
	s.SubscribersUnadmitted = m.pub.Unadmitted.Load()
	s.AcceptErrors = m.router.AcceptErrors() + m.pub.AcceptErrors()
	s.Evicted = m.router.Evicted() + m.pub.Evicted()
	s.Handshakes = m.router.Handshakes() + m.pub.Handshakes()
	s.Challenges = m.challenges.len()
	return s
}
