package test

import (
	"io"
	"log"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	// Helm's loader logs a line for every link in files/ (they are
	// meant: one source for the rules, dashboards and configuration).
	log.SetOutput(io.Discard)
	os.Exit(m.Run())
}
