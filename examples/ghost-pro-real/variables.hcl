# Variables of the reference deployment on real Debian packages (`brine demo --real`): nginx on
# the cache, a small Python web application on the app hosts, MariaDB on the database host.
# The database password is secret "db_password" in the master's secrets file; `brine apply '*'`
# needs it for every host (the master checks the bundle's secret() calls, not which hosts skip
# them), or apply the roles separately and target it "group:db or group:app".

variable "base_packages" {
  type        = list(string)
  default     = ["curl", "ca-certificates"]
  description = "Packages every host gets."
}

variable "proxy_port" {
  type        = number
  default     = 80
  description = "The cache's public HTTP port (nginx)."
}

variable "app_port" {
  type    = number
  default = 2368
}

variable "db_port" {
  type    = number
  default = 3306
}

variable "ssh_port" {
  type    = number
  default = 22
}

variable "post_title" {
  type        = string
  default     = "Hello from MariaDB, over the mesh"
  description = "The title of the one post the database holds, which the application serves."
}

variable "public_iface" {
  type        = string
  default     = "eth0"
  description = "The interface with each host's public address (eth0 on droplets and testbed hosts)."
}

variable "mesh_prefix" {
  type        = string
  default     = "10.8.0"
  description = "The tinc mesh's /24; a host's mesh address ends in the last octet of its public one."
}
