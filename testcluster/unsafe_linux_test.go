package testcluster_test

import "unsafe"

func unsafePointer(p *[512]byte) unsafe.Pointer { return unsafe.Pointer(p) }
