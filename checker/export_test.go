package checker

// CheckSQL is the check's statement, for the benchmarks of its cost.
const CheckSQL = checkSQL
