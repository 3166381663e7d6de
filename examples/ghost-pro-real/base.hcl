# Every host (groups core, cache, app, db): base packages, a firewall that blocks everything but
# SSH and the mesh, and a tinc mesh across all hosts that the servers use to talk to each other.
# The same as examples/ghost-pro/base.hcl, plus the sysctl that lets a server bind its mesh
# address before tinc has brought it up (as keepalived's addresses are bound).

locals {
  public_address = minion.facts.interfaces[var.public_iface].ipv4[0]
  mesh_address   = "${var.mesh_prefix}.${split(".", local.public_address)[3]}"

  # Every host of the deployment, as the master last saw it: its public and mesh addresses and
  # its tinc public key (empty until its first apply made one; the master then applies again).
  # Everything that reaches another host's tinc host files or firewall is attested: the address
  # the master saw the host connect from and the tinc key it pinned, never what the host claims
  # in its facts (docs/states.md, "Facts are claims"). A host whose address the master has not
  # seen yet, or that is not IPv4, joins once it has.
  hosts = [for p in peers("*") : {
    id          = p.id
    groups      = p.groups
    public      = p.attested.address
    mesh        = "${var.mesh_prefix}.${split(".", p.attested.address)[3]}"
    tinc_pubkey = try(p.attested.tinc_pubkey.ghost, "")
  } if length(split(".", p.attested.address)) == 4]
}

package "base" {
  for_each = toset(var.base_packages) # one resource per package, installed in one apt run
}

tinc_network "ghost" {
  address = "${local.mesh_address}/24"
  members = [for h in local.hosts : {
    name        = h.id
    address     = h.public
    vpn_address = h.mesh
    public_key  = h.tinc_pubkey
  }]
  key_size = 2048
}

ufw {
  default_incoming = "deny"
  default_outgoing = "allow"
  default_routed   = "deny"
  logging          = "low"
  enabled          = true

  rule "ssh" {
    action  = "limit"
    port    = "${var.ssh_port}"
    proto   = "tcp"
    comment = "operators"
  }
  rule "tinc" {
    port    = "655"
    comment = "tinc, the mesh transport: encrypted and authenticated"
  }
  rule "mesh" {
    interface = "tinc-ghost"
    comment   = "everything between the servers goes over the mesh"
  }
  dynamic "rule" {
    for_each = contains(minion.groups, "cache") ? { http = var.proxy_port } : {}
    labels   = [rule.key]
    content {
      port    = "${rule.value}"
      proto   = "tcp"
      comment = "the public side of the cache"
    }
  }
  depends_on = [tinc_network.ghost]
}

file "sysctl_ghost" {
  path    = "/etc/sysctl.d/60-ghost.conf"
  content = "# Servers listen on their mesh address, which exists once tincd has run tinc-up.\nnet.ipv4.ip_nonlocal_bind = 1\n"
  notify  = [exec.sysctl_ghost]
}

exec "sysctl_ghost" {
  command    = "sysctl -q -p /etc/sysctl.d/60-ghost.conf"
  unless     = "test \"$(sysctl -n net.ipv4.ip_nonlocal_bind)\" = 1"
  depends_on = [file.sysctl_ghost]
}
