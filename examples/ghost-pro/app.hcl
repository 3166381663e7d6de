# app: the blog application, listening on this host's mesh address only: reachable from the
# other servers over tinc, never from outside.

package "app" {
  name    = var.app_package
  only_if = contains(minion.groups, "app")
}

file "app_env" {
  path    = "/etc/${var.app_package}/${var.app_package}.env"
  content = "LISTEN=${local.mesh_address}\nPORT=${var.app_port}\n"
  only_if = contains(minion.groups, "app")
  notify  = [service.app]
}

service "app" {
  state      = "running"
  command    = var.app_command
  only_if    = contains(minion.groups, "app")
  depends_on = [package.app, tinc_network.ghost]
}
