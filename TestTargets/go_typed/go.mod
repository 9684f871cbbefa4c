module graft/victims/go_typed

go 1.19
