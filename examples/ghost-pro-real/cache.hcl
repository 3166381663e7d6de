# cache: nginx, the only role with a public port besides SSH, proxying to the app hosts over the
# mesh; its upstreams are the app hosts' mesh addresses, from peers("*").

package "nginx" {
  only_if = contains(minion.groups, "cache")
}

file "nginx_default_site" {
  path       = "/etc/nginx/sites-enabled/default"
  state      = "absent"
  only_if    = contains(minion.groups, "cache")
  depends_on = [package.nginx]
  notify     = [service.nginx]
}

file "nginx_ghost" {
  path     = "/etc/nginx/conf.d/ghost.conf"
  template = "files/nginx-ghost.conf.tmpl"
  vars = {
    listen = var.proxy_port
    port   = var.app_port
    hosts  = [for h in local.hosts : h if contains(h.groups, "app")]
  }
  only_if    = contains(minion.groups, "cache")
  depends_on = [package.nginx]
  notify     = [service.nginx]
}

service "nginx" {
  state      = "running"
  enabled    = true
  reload     = "reload"
  only_if    = contains(minion.groups, "cache")
  depends_on = [file.nginx_ghost, file.nginx_default_site]
}
