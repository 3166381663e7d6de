# app: a small blog application (Python's http.server, from Debian's python3) under its own
# systemd unit, listening on this host's mesh address only; it reads its post from MariaDB on
# the db host, over the mesh.

locals {
  db_mesh = try([for h in local.hosts : h.mesh if contains(h.groups, "db")][0], "")
}

package "python3-pymysql" {
  only_if = contains(minion.groups, "app")
}

file "ghost_app" {
  path    = "/usr/local/bin/ghost-app"
  source  = "files/ghost-app.py"
  mode    = "0755"
  only_if = contains(minion.groups, "app")
  notify  = [service.ghost-app]
}

file "ghost_app_env" {
  path    = "/etc/default/ghost-app"
  mode    = "0600"
  content = "LISTEN=${local.mesh_address}\nPORT=${var.app_port}\nDB_HOST=${local.db_mesh}\nDB_PORT=${var.db_port}\nDB_USER=ghost\nDB_PASSWORD=${secret("db_password")}\n"
  only_if = contains(minion.groups, "app")
  notify  = [service.ghost-app]
}

file "ghost_app_unit" {
  path    = "/etc/systemd/system/ghost-app.service"
  source  = "files/ghost-app.service"
  only_if = contains(minion.groups, "app")
  notify  = [service.ghost-app]
}

service "ghost-app" {
  state      = "running"
  enabled    = true
  only_if    = contains(minion.groups, "app")
  depends_on = [package.python3-pymysql, file.ghost_app, file.ghost_app_env, file.ghost_app_unit, exec.sysctl_ghost, tinc_network.ghost]
}
