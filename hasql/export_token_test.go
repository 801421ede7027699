package hasql

// ParseHistory and ForkPosition are the pure parts of After's fork check.
var (
	ParseHistory = parseHistory
	ForkPosition = forkPosition
)
