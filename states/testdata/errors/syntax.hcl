# want: 3:12 Invalid expression
file "/tmp/brine-errtest/a" {
  content =
}
