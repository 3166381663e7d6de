# want: 3:11 Invalid file state
file "/tmp/brine-errtest/a" {
  state = "present"
}
