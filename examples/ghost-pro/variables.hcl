# Variables of the reference deployment. The defaults fit the testbed (`make demo`): the packages
# are brine's tiny stand-ins from the testbed's apt repository. A real deployment names real
# Debian packages and commands, e.g.
#   --var proxy_package=nginx --var app_package=nodejs --var db_package=mariadb-server

variable "base_packages" {
  type        = list(string)
  default     = ["brine-lib"]
  description = "Packages every host gets (real: [\"unattended-upgrades\", \"curl\"])."
}

variable "proxy_package" {
  type    = string
  default = "brine-proxy"
}

variable "app_package" {
  type    = string
  default = "brine-blog"
}

variable "db_package" {
  type    = string
  default = "brine-db"
}

variable "proxy_command" {
  type    = string
  default = "/usr/sbin/brine-proxy"
}

variable "app_command" {
  type    = string
  default = "/usr/sbin/brine-blog"
}

variable "db_command" {
  type    = string
  default = "/usr/sbin/brine-db"
}

variable "proxy_port" {
  type    = number
  default = 8080
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
