# want: 3:3 Unsupported argument
file "/tmp/brine-errtest/a" {
  colour = "red"
}
