# want: 2:1 No value for required variable
variable "port" {
  type = number
}
file "/tmp/brine-errtest/a" {
  content = "${var.port}"
}
