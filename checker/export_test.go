package checker

// The check's statements, for the benchmarks of their cost.
const (
	CheckSQL        = checkSQL
	MasterCheckSQL  = masterCheckSQL
	ReplicaCheckSQL = replicaCheckSQL
)
