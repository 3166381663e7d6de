# cache: the proxy in front of the blogs, with its upstreams (the app hosts' mesh addresses) from
# peers("group:app"). It is the only role with a public port besides SSH.

package "proxy" {
  name    = var.proxy_package
  only_if = contains(minion.groups, "cache")
}

file "proxy_env" {
  path    = "/etc/${var.proxy_package}/${var.proxy_package}.env"
  content = "LISTEN=0.0.0.0\nPORT=${var.proxy_port}\n"
  only_if = contains(minion.groups, "cache")
  notify  = [service.proxy]
}

file "proxy_upstreams" {
  path     = "/etc/${var.proxy_package}/upstreams.conf"
  template = "files/upstreams.conf.tmpl"
  vars = {
    port  = var.app_port
    hosts = [for h in local.hosts : h if contains(h.groups, "app")]
  }
  only_if = contains(minion.groups, "cache")
  notify  = [service.proxy]
}

service "proxy" {
  state      = "running"
  command    = var.proxy_command
  only_if    = contains(minion.groups, "cache")
  depends_on = [package.proxy]
}
