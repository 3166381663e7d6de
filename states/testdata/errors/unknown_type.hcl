# want: 2:1 Unsupported block type
fiel "/tmp/brine-errtest/a" {
  content = "x"
}
