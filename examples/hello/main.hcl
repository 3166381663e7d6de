# A small bundle that shows the state language: variables, minion facts, files from content,
# templates and bundle sources, a directory, a guarded command and a notify.
#
#   brine local plan  examples/hello --var root=/tmp/hello
#   brine local apply examples/hello --var root=/tmp/hello

variable "root" {
  type        = string
  description = "Directory everything is written under (a scratch directory for the demo)."
}

variable "greeting" {
  type    = string
  default = "Hello"
}

variable "sites" {
  type    = list(string)
  default = ["blog-1.example", "blog-2.example"]
}

file "root" {
  path  = var.root
  state = "directory"
  mode  = "0755"
}

file "motd" {
  path       = "${var.root}/etc/motd"
  content    = "${var.greeting} from ${minion.id} (${minion.facts.os} ${minion.facts.arch}, ${minion.facts.cpus} cpus)\n"
  mode       = "0644"
  depends_on = [file.root]
}

file "site_conf" {
  path     = "${var.root}/etc/sites.conf"
  template = "files/sites.conf.tmpl"
  vars     = { sites = var.sites, host = minion.id }
  notify   = [exec.reload_sites]
}

file "banner" {
  path   = "${var.root}/etc/banner.txt"
  source = "files/banner.txt"
  mode   = "0600"
}

exec "reload_sites" {
  command      = "wc -l < ${var.root}/etc/sites.conf > ${var.root}/sites.count"
  refresh_only = true
}

exec "stamp" {
  command    = "date -u +%Y-%m-%d > ${var.root}/installed-on"
  creates    = "${var.root}/installed-on"
  depends_on = [file.root]
}
