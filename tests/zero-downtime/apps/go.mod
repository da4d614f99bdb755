module ebb.test/zero-downtime

go 1.19
