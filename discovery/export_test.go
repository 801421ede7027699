package discovery

// Jitter is jitter, for the bounds test.
var Jitter = jitter
