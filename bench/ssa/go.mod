module gitopsd/bench/ssa

go 1.22
