module graft/victims/go_loop

go 1.19
