# /etc/brine/master.hcl: read by `brine master` (and the brine-master unit) when it exists.
# Every setting is commented out: the master runs on these built-in defaults. Uncomment to change.
# Reference: docs/master.md.
#
# data_dir       = "/var/lib/brine/master"  # keys, key store, job store, control socket (0700)
# publish_addr   = "0.0.0.0:4505"           # PUB: jobs and heartbeats
# request_addr   = "0.0.0.0:4506"           # ROUTER: auth, returns, facts
# auto_accept    = false                    # accept every new minion key (labs only)
# session_rotate = "24h"                    # start a new session key generation this often
# heartbeat      = "5s"                     # publish a heartbeat this often
# job_timeout    = "5m"                     # default `brine apply --timeout`
# secrets_file   = "/var/lib/brine/master/secrets.hcl"
# control_socket = "/var/lib/brine/master/master.sock"
# bootstrap_addr = ""                       # HTTP address serving this binary to new droplets; off when empty
# advertise_addr = ""                       # host droplets reach the master at
# store          = ""                       # "postgres://user@host/db": one database shared by many masters
# name           = ""                       # this master in presence leases (default "<hostname>/<request_addr>")
