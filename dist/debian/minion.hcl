# /etc/brine/minion.hcl: read by `brine minion` (and the brine-minion unit) when it exists.
# Every setting is commented out. A minion needs at least the master's address: set `master`,
# then `systemctl enable --now brine-minion`. Reference: docs/master.md.
#
# master        = "10.0.0.1"               # host of the master (or host:request_port), or a list: ["m1", "m2"]
# publish_port  = 4505
# request_port  = 4506
# id            = "<hostname>"             # ^[a-z0-9][a-z0-9.-]{0,62}$
# data_dir      = "/var/lib/brine/minion"  # keys, pinned master key, seen jobs, unsent returns (0700)
# master_finger = ""                       # pin the master's key; empty = trust on first use
# groups        = []                       # groups to ask for (the operator grants them)
# token         = ""                       # enrolment token (brine key token create): accepted without the operator
# facts         = {}                       # extra facts, strings
# heartbeat     = "5s"
# max_backoff   = "30s"                    # reconnect backoff cap (with jitter)
