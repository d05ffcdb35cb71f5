// Package ldaptest gives tests the project's test directory server, run by
// deploy/ldap/start the way the mail-server lab is: a private OpenLDAP
// slapd on 127.0.0.1 with StartTLS and LDAPS. Each test gets an
// organizational unit of its own, deleted when it ends, to put people in.
package ldaptest

import (
	"bufio"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/go-ldap/ldap/v3"

	"smimeproxy/internal/testutil"
)

// Server is the running test directory, as deploy/ldap/start describes it.
type Server struct {
	URL           string // LDAP_URL: ldap://, StartTLS required
	LDAPSURL      string // LDAPS_URL
	CA            string // LDAP_CA: PEM file of the CA of the server's certificate
	Suffix        string // LDAP_SUFFIX
	BindDN        string // LDAP_BIND_DN: the read-only account the proxy binds as
	BindPassword  string
	BindPassFile  string // LDAP_BIND_PASSWORD_FILE
	adminDN       string
	adminPassword string
}

var peer = testutil.Peer[*Server]{Dir: "ldap", Name: "slapd", Parse: parse}

// Start returns the server, starting it the first time a test of this
// binary asks (see testutil.Peer).
func Start(t testing.TB) *Server {
	t.Helper()
	return peer.Start(t)
}

// parse reads the KEY=VALUE lines that deploy/ldap/start prints.
func parse(r io.Reader) (*Server, error) {
	s := &Server{}
	var adminFile string
	fields := map[string]*string{"LDAP_URL": &s.URL, "LDAPS_URL": &s.LDAPSURL, "LDAP_CA": &s.CA, "LDAP_SUFFIX": &s.Suffix,
		"LDAP_BIND_DN": &s.BindDN, "LDAP_BIND_PASSWORD_FILE": &s.BindPassFile, "LDAP_ADMIN_DN": &s.adminDN, "LDAP_ADMIN_PASSWORD_FILE": &adminFile}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok && fields[k] != nil {
			*fields[k] = v
		}
	}
	for k, p := range fields {
		if *p == "" {
			return nil, fmt.Errorf("deploy/ldap printed no %s", k)
		}
	}
	for _, f := range []struct {
		path string
		to   *string
	}{{s.BindPassFile, &s.BindPassword}, {adminFile, &s.adminPassword}} {
		pw, err := os.ReadFile(f.path)
		if err != nil {
			return nil, fmt.Errorf("ldaptest: %w", err)
		}
		*f.to = strings.TrimSpace(string(pw))
	}
	return s, nil
}

// CAPool is the pool that verifies the server's certificate.
func (s *Server) CAPool(t testing.TB) *x509.CertPool {
	t.Helper()
	pem, err := os.ReadFile(s.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("ldaptest: no certificate in %s", s.CA)
	}
	return pool
}

// admin connects as the administrator, over StartTLS.
func (s *Server) admin(t testing.TB) *ldap.Conn {
	t.Helper()
	conn, err := ldap.DialURL(s.URL)
	if err != nil {
		t.Fatalf("ldaptest: %v", err)
	}
	if err := conn.StartTLS(&tls.Config{RootCAs: s.CAPool(t), ServerName: "127.0.0.1"}); err != nil {
		conn.Close()
		t.Fatalf("ldaptest: StartTLS: %v", err)
	}
	if err := conn.Bind(s.adminDN, s.adminPassword); err != nil {
		conn.Close()
		t.Fatalf("ldaptest: bind as the administrator: %v", err)
	}
	return conn
}

// OU makes an organizational unit for the test alone and returns its DN;
// it is deleted, with the people in it, when the test ends.
func (s *Server) OU(t testing.TB) string {
	t.Helper()
	var b [6]byte
	rand.Read(b[:])
	name := "test-" + hex.EncodeToString(b[:])
	dn := "ou=" + name + "," + s.Suffix
	conn := s.admin(t)
	defer conn.Close()
	add := ldap.NewAddRequest(dn, nil)
	add.Attribute("objectClass", []string{"organizationalUnit"})
	add.Attribute("ou", []string{name})
	if err := conn.Add(add); err != nil {
		t.Fatalf("ldaptest: add %s: %v", dn, err)
	}
	t.Cleanup(func() {
		conn := s.admin(t)
		defer conn.Close()
		res, err := conn.Search(ldap.NewSearchRequest(dn, ldap.ScopeSingleLevel, ldap.NeverDerefAliases, 0, 0, false, "(objectClass=*)", []string{"dn"}, nil))
		if err != nil {
			t.Errorf("ldaptest: list %s: %v", dn, err)
			return
		}
		for _, e := range res.Entries {
			if err := conn.Del(ldap.NewDelRequest(e.DN, nil)); err != nil {
				t.Errorf("ldaptest: delete %s: %v", e.DN, err)
			}
		}
		if err := conn.Del(ldap.NewDelRequest(dn, nil)); err != nil {
			t.Errorf("ldaptest: delete %s: %v", dn, err)
		}
	})
	return dn
}

// AddPerson adds an inetOrgPerson with the address under ou, with each
// attribute's raw values (such as userCertificate;binary: DER), and returns
// its DN.
func (s *Server) AddPerson(t testing.TB, ou, mail string, attrs map[string][][]byte) string {
	t.Helper()
	uid := strings.NewReplacer("@", "-", ".", "-").Replace(mail)
	dn := "uid=" + ldap.EscapeDN(uid) + "," + ou
	conn := s.admin(t)
	defer conn.Close()
	add := ldap.NewAddRequest(dn, nil)
	add.Attribute("objectClass", []string{"inetOrgPerson"})
	add.Attribute("uid", []string{uid})
	add.Attribute("cn", []string{mail})
	add.Attribute("sn", []string{uid})
	add.Attribute("mail", []string{mail})
	for name, values := range attrs {
		vs := make([]string, len(values))
		for i, v := range values {
			vs[i] = string(v)
		}
		add.Attribute(name, vs)
	}
	if err := conn.Add(add); err != nil {
		t.Fatalf("ldaptest: add %s: %v", dn, err)
	}
	return dn
}
