package main

import (
	"crypto/x509"
	"encoding/pem"
)

// commands lists the subcommands in the order --help shows them.
func commands() []*command {
	return []*command{
		serveCommand(),
		demoCommand(),
		csrCommand(),
		importCommand(),
		backupCommand(),
		identitiesCommand(),
		passphraseCommand(),
		certsCommand(),
		trustCommand(),
		messageCommand(),
		storeCommand(),
		checkConfigCommand(),
		healthCommand(),
	}
}

// certPEM encodes certificates as PEM.
func certPEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}
