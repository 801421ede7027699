package checker

// The check's statements, for the benchmarks of their cost.
const (
	CheckSQL        = checkSQL
	MasterCheckSQL  = masterCheckSQL
	MasterQuietSQL  = masterQuietSQL
	ReplicaCheckSQL = replicaCheckSQL
)

var (
	ReceiverConnInfoValue = receiverConnInfoValue
	WalsenderName         = walsenderName
)
