# want: 3:10 Unsuitable value type
file "/tmp/brine-errtest/a" {
  mode = ["0644"]
}
