module graft/victims/go_goroutines

go 1.19
