provider "digitalocean" {
  api_url = "http://127.0.0.1:PORT/"
}
profile "app" {
  region  = "ams3"
  size    = "s-1vcpu-1gb"
  image   = "debian-12-x64"
  groups  = ["app"]
  bundles = ["app"]       # ./app/*.hcl, applied once the droplet enrolled
}
