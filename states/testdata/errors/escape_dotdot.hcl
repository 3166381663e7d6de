# want: 3:12 Invalid file source
file "/tmp/brine-errtest/a" {
  source = "../../../etc/passwd"
}
