//go:build !linux

package testcluster

import (
	"errors"
	"syscall"
	"time"
)

var errNotLinux = errors.New("testcluster: the local process backend needs Linux (it controls process trees through /proc)")

func becomeSubreaper()                                           {}
func childPids(int) []int                                        { return nil }
func processAlive(int) bool                                      { return false }
func stopTree(int) ([]int, error)                                { return nil, errNotLinux }
func continueTree(int) error                                     { return errNotLinux }
func killTree(int) []int                                         { return nil }
func reap([]int, time.Duration)                                  {}
func serverCredential() (*syscall.Credential, error)             { return nil, errNotLinux }
func sysProcAttr(*syscall.Credential, bool) *syscall.SysProcAttr { return nil }
func chownTree(string, *syscall.Credential) error                { return nil }
