# want: 3:17 Reference to undeclared resource
file "/tmp/brine-errtest/a" {
  depends_on = [file["/tmp/brine-errtest/nope"]]
}
