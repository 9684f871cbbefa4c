module graft/victims/go_busy

go 1.19
