# want: 4:13 Error in function call
# the test creates "passwd-link" -> /etc/passwd next to this file
file "/tmp/brine-errtest/a" {
  content = file("passwd-link")
}
