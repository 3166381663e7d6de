# want: 3:16 Unsupported attribute
file "/tmp/brine-errtest/a" {
  content = var.nope
}
