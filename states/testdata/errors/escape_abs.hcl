# want: 3:13 Error in function call
file "/tmp/brine-errtest/a" {
  content = file("/etc/passwd")
}
