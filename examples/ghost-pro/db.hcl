# db: the database, listening on this host's mesh address only.

package "db" {
  name    = var.db_package
  only_if = contains(minion.groups, "db")
}

file "db_env" {
  path    = "/etc/${var.db_package}/${var.db_package}.env"
  content = "LISTEN=${local.mesh_address}\nPORT=${var.db_port}\n"
  only_if = contains(minion.groups, "db")
  notify  = [service.db]
}

service "db" {
  state      = "running"
  command    = var.db_command
  only_if    = contains(minion.groups, "db")
  depends_on = [package.db, tinc_network.ghost]
}
