package main

// The config files the daemons read when -c is not given and the file exists
// (daemoncli.ConfigPath); the minion's is minioncli.DefaultConfig.
const defaultMasterConfig = "/etc/brine/master.hcl"
