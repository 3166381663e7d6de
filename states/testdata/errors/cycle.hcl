# want: 6:17 Dependency cycle
file "/tmp/brine-errtest/a" {
  depends_on = [file["/tmp/brine-errtest/b"]]
}
file "/tmp/brine-errtest/b" {
  depends_on = [file["/tmp/brine-errtest/a"]]
}
