# db: MariaDB listening on this host's mesh address only, holding the blog's one post; the app
# hosts' user may connect from the mesh only.

package "mariadb-server" {
  only_if = contains(minion.groups, "db")
}

file "mariadb_ghost" {
  path       = "/etc/mysql/mariadb.conf.d/60-ghost.cnf"
  content    = "# Managed by brine: listen on the mesh only.\n[mysqld]\nbind-address = ${local.mesh_address}\nport = ${var.db_port}\n"
  only_if    = contains(minion.groups, "db")
  depends_on = [package.mariadb-server]
  notify     = [service.mariadb]
}

service "mariadb" {
  state      = "running"
  enabled    = true
  only_if    = contains(minion.groups, "db")
  depends_on = [file.mariadb_ghost, exec.sysctl_ghost, tinc_network.ghost]
}

file "ghost_schema" {
  path     = "/etc/mysql/ghost-schema.sql"
  mode     = "0600"
  template = "files/schema.sql.tmpl"
  vars = {
    password = secret("db_password")
    clients  = "${var.mesh_prefix}.%"
    title    = var.post_title
  }
  only_if    = contains(minion.groups, "db")
  depends_on = [package.mariadb-server]
  notify     = [exec.ghost_schema]
}

# Applies the schema file whenever it differs from the one last applied (its sha256 is kept).
exec "ghost_schema" {
  command    = "mariadb < /etc/mysql/ghost-schema.sql && sha256sum /etc/mysql/ghost-schema.sql > /var/lib/mysql/ghost-schema.sha256"
  unless     = "sha256sum --check --status /var/lib/mysql/ghost-schema.sha256"
  only_if    = contains(minion.groups, "db")
  depends_on = [service.mariadb, file.ghost_schema]
}
