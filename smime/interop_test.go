package smime_test

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"io"
	"mime"
	"mime/quotedprintable"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message/textproto"

	"smimeproxy/cms"
	"smimeproxy/internal/testutil"
	"smimeproxy/smime"
)

// The interop test is driven by ../shared/interop/MANIFEST.md: its "OpenSSL
// check here (layers outer->inner)" tables give, for every message, the layers
// OpenSSL peeled and the content it found; the facts the manifest states in
// prose (keys, trust anchors, the time to verify at) are in folderFacts; the
// rows no table covers, and the places where we differ from OpenSSL on
// purpose, are in overrides.

// folder holds what the manifest says about one folder of the corpus.
type folder struct {
	keys  [][2]string // key and certificate PEM files
	roots []string
	known []string  // certificates of signers that embed none
	at    time.Time // zero: verify now
	// protected: messages whose name begins so carry protected headers.
	protected string
}

func day(s string) time.Time {
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		panic(err)
	}
	return t
}

var folderFacts = map[string]folder{
	// "Decrypt with Bob.p12 ... Signed layers chain to TestCA.pem; verify at 2026-02-01."
	"thunderbird/smime": {
		keys:  [][2]string{{"thunderbird/derived-pem/Bob.key.pem", "thunderbird/derived-pem/Bob.cert.pem"}},
		roots: []string{"thunderbird/smime/TestCA.pem"},
		at:    day("2026-02-01"),
	},
	"thunderbird/smime-manual": {
		keys:  [][2]string{{"thunderbird/derived-pem/Bob.key.pem", "thunderbird/derived-pem/Bob.cert.pem"}},
		roots: []string{"thunderbird/smime/TestCA.pem"},
		at:    day("2026-02-01"),
	},
	// Fran and Fran-ec: decryption only.
	"thunderbird/smime-interop": {
		keys: [][2]string{
			{"thunderbird/derived-pem/Fran.key.pem", "thunderbird/derived-pem/Fran.cert.pem"},
			{"thunderbird/derived-pem/Fran-ec.key.pem", "thunderbird/derived-pem/Fran-ec.cert.pem"},
		},
	},
	// KMail embeds no certificate: the unittest cert is known and is the root; at 2012-06-01.
	"kde-mimetreeparser": {
		keys:  [][2]string{{"kde-mimetreeparser/derived-pem/unittest.key.pem", "kde-mimetreeparser/derived-pem/unittest.cert.pem"}},
		roots: []string{"kde-mimetreeparser/derived-pem/unittest.cert.pem"},
		known: []string{"kde-mimetreeparser/derived-pem/unittest.cert.pem"},
		at:    day("2012-06-01"),
	},
	// "These messages carry RFC 9788-style protected headers" (the smime-*.eml ones).
	"notmuch": {
		keys:      [][2]string{{"notmuch/derived-pem/bob.key.pem", "notmuch/derived-pem/bob.cert.pem"}},
		roots:     []string{"notmuch/ca.crt"},
		protected: "notmuch/smime-",
	},
	// Messages dated 2019-04-27: verify at 2019-04-28.
	"simple-java-mail": {
		keys:  [][2]string{{"simple-java-mail/derived-pem/smime_test_user.key.pem", "simple-java-mail/smime_test_user.pem.standard.crt"}},
		roots: []string{"simple-java-mail/ca.crt"},
		at:    day("2019-04-28"),
	},
	// PKITS intends "now".
	"pkits":   {roots: []string{"pkits/TrustAnchorRootCertificate.pem"}},
	"openssl": {},
	"gnupg":   {},
	// Dana (X25519) first, so that encryptedForBobAndDana opens through her
	// key agreement, which the manifest's OpenSSL could not do.
	"examples-cms": {
		keys: [][2]string{
			{"examples-cms/certs-and-keys/lamps-dana.decrypt.p8.pem", "examples-cms/certs-and-keys/lamps-dana.encrypt.crt"},
			{"examples-cms/certs-and-keys/lamps-bob.decrypt.p8.pem", "examples-cms/certs-and-keys/lamps-bob.encrypt.crt"},
		},
	},
}

// layer is one step of the manifest's peeling: decrypt, or verify with the
// chain (ok) and, when that failed, the signature alone (sigOnly).
type layer struct {
	decrypt bool
	ok      bool
	sigOnly bool
}

// want is what a message must give.
type want struct {
	layers      []layer
	contentType string // of the served message; "" skips the content check
	text        string // prefix of its first text part, whitespace collapsed
	// Exact statuses, when the layer mapping is not precise enough.
	statuses []smime.Status
	// sha1Allowed are the statuses of the SHA-1 signatures when SHA-1 is
	// allowed; nil: valid.
	sha1Allowed []smime.Status
	encrypted   bool // with decrypted=false: an encrypted layer stays closed
	noDecrypt   error
	unchanged   bool // the message is served as it is
	// part, when not empty, names a body part to open on its own (1-based
	// index in a top-level multipart), as the manifest's "separate check".
	part int
	// wrap is the smime-type of a MIME wrapper for raw CMS files.
	wrap string
	// divergence says why we differ from the manifest's OpenSSL column.
	divergence string
}

// overrides are the rows that no OpenSSL layers table covers, and those where
// we differ from OpenSSL on purpose.
var overrides = map[string]want{
	"kde-mimetreeparser/smime-encrypted-ambiguous-mime.mbox": {
		unchanged: true,
		part:      2,
		layers:    []layer{{decrypt: true, ok: true}, {ok: true}},
		text:      "Encrypted and signed mail.",
		// From is firstname.lastname@example.com; the certificate names test@example.com.
		sha1Allowed: []smime.Status{smime.StatusAddressMismatch},
		divergence: "a multipart/mixed that merely contains an encrypted part is not treated as encrypted (as in Thunderbird); " +
			"the part opens on its own, and its signer is not the From address, which OpenSSL does not check",
	},
	"kde-mimetreeparser/smime-encrypted-octet-stream.mbox": {
		layers:      []layer{{decrypt: true, ok: true}},
		contentType: "text/plain",
		text:        "The quick brown fox jumped over the lazy dog.",
		divergence:  "application/octet-stream named smime.p7m is sniffed with cms.Identify (RFC 8551 3.2.2), where the OpenSSL peeler stops",
	},
	"thunderbird/smime-manual/outer-pgp-sig-inner-smime-enc-sig.eml": {
		encrypted: true, noDecrypt: cms.ErrNoRecipient, unchanged: true,
		divergence: "the PGP/MIME signature is not ours to check (no smime result); we step into its S/MIME content, which is for the unshipped 2023 Bob",
	},
	"thunderbird/smime-manual/outer-pgp-sig-inner-smime-enc.eml": {
		encrypted: true, noDecrypt: cms.ErrNoRecipient, unchanged: true,
		divergence: "the PGP/MIME signature is not ours to check (no smime result); we step into its S/MIME content, which is for the unshipped 2023 Bob",
	},
	"notmuch/smime-enc+legacy-disp.eml": {
		layers: []layer{{decrypt: true, ok: true}}, contentType: "multipart/mixed", text: "Hi Bob! I just signed the contract with BarCorp",
		divergence: "the legacy display part (protected-headers=\"v1\") is left out of the decrypted payload, whose Subject is the message's own",
	},
	"notmuch/smime-sign+enc+legacy-disp.eml": {
		layers: []layer{{decrypt: true, ok: true}, {ok: true}}, contentType: "multipart/mixed", text: "Hi Bob! I just signed the contract with BarCorp",
		divergence: "the legacy display part (protected-headers=\"v1\") is left out of the decrypted payload, whose Subject is the message's own",
	},
	"openssl/pkcs7-empty-digest-set.eml": {
		// "Must fail cleanly, not crash": it does, as untrusted.
		statuses: []smime.Status{smime.StatusUntrusted}, unchanged: true,
		divergence: "RFC 5652 5.1 allows an empty digestAlgorithms set, which OpenSSL trips on; " +
			"the signature itself verifies and its self-signed PoC signer is untrusted",
	},
	// CMS-level objects, which belong to cms; here only wrapped in MIME, to
	// show how Open reports what it cannot or can open.
	"gnupg/pwri-sample.gcm.p7m":                            {wrap: "enveloped-data", encrypted: true, noDecrypt: cms.ErrNoRecipient, unchanged: true},
	"gnupg/pwri-sample.cbc.p7m":                            {wrap: "enveloped-data", encrypted: true, noDecrypt: cms.ErrNoRecipient, unchanged: true},
	"gnupg/pwri-sample.cbc-2.p7m":                          {wrap: "enveloped-data", encrypted: true, noDecrypt: cms.ErrNoRecipient, unchanged: true},
	"openssl/authenveloped_attrs.pem":                      {wrap: "authEnveloped-data", encrypted: true, noDecrypt: cms.ErrNoRecipient, unchanged: true},
	"openssl/bad_authenveloped_attrs.pem":                  {wrap: "authEnveloped-data", encrypted: true, noDecrypt: cms.ErrNoRecipient, unchanged: true},
	"examples-cms/binary-files/encryptedForBobRSAOaep.p7m": {wrap: "enveloped-data", layers: []layer{{decrypt: true, ok: true}}, text: "This is some sample content."},
	"examples-cms/binary-files/encryptedForBobAndDana.p7m": {wrap: "enveloped-data", layers: []layer{{decrypt: true, ok: true}}, text: "This is some sample content."},
	"examples-cms/binary-files/authEnvelopedForBobChaCha20Poly1305.p7m": {
		wrap: "authEnveloped-data", encrypted: true, unchanged: true,
		divergence: "ChaCha20-Poly1305 (RFC 8103) is not among our ciphers; the manifest decrypted it by hand",
	},
	// The CA of RFC 9216's Alice is not shipped: the signature alone verifies.
	"examples-cms/binary-files/signedByAliceRSA.p7m":    {wrap: "signed-data", layers: []layer{{ok: false, sigOnly: true}}, text: "This is some sample content."},
	"examples-cms/binary-files/signedByAliceRSAPSS.p7m": {wrap: "signed-data", layers: []layer{{ok: false, sigOnly: true}}, text: "This is some sample content."},
	"examples-cms/binary-files/signedByCarlosEd25519.p7m": {
		wrap: "signed-data", layers: []layer{{ok: false, sigOnly: true}}, text: "This is some sample content.",
		divergence: "OpenSSL 3.0 cannot verify Ed25519 with SHA-512 here; RFC 8419 says it verifies",
	},
}

// manifestRow is one message named by the manifest.
type manifestRow struct {
	folder, file string
	cell         string // the OpenSSL layers cell, "" when the file is only listed
}

var (
	headingRE = regexp.MustCompile("^#{2,3} ([a-z0-9-]+(?:/[a-z0-9-]+)*)/")
	backtick  = regexp.MustCompile("`([^`]+)`")
)

// readManifest returns every file that a table row names, with its OpenSSL
// layers cell when it is in such a table.
func readManifest(t *testing.T, dir string) []manifestRow {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "MANIFEST.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rows []manifestRow
	folderName, layersCol := "", -1
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := headingRE.FindStringSubmatch(line); m != nil {
			folderName = m[1]
			continue
		} else if strings.HasPrefix(line, "## ") {
			folderName = ""
		}
		if !strings.HasPrefix(line, "|") {
			layersCol = -1
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), " | ")
		if !strings.HasPrefix(strings.TrimSpace(cells[0]), "`") {
			// A table header: find the layers column.
			if layersCol < 0 || strings.HasPrefix(line, "| file") {
				layersCol = -1
				for i, c := range cells {
					if strings.Contains(c, "check here (layers outer->inner)") {
						layersCol = i
					}
				}
			}
			continue
		}
		var cell string
		if layersCol >= 0 && layersCol < len(cells) {
			cell = strings.TrimSpace(cells[layersCol])
		}
		for _, m := range backtick.FindAllStringSubmatch(cells[0], -1) {
			for _, name := range expandBraces(m[1]) {
				for _, n := range expandGlob(dir, folderName, name) {
					rows = append(rows, manifestRow{folder: folderName, file: n, cell: cell})
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return rows
}

// expandBraces turns "a/{x,y}.pem" into "a/x.pem", "a/y.pem".
func expandBraces(s string) []string {
	i, j := strings.IndexByte(s, '{'), strings.IndexByte(s, '}')
	if i < 0 || j < i {
		return []string{s}
	}
	var out []string
	for _, alt := range strings.Split(s[i+1:j], ",") {
		out = append(out, expandBraces(s[:i]+alt+s[j+1:])...)
	}
	return out
}

// expandGlob turns a pattern such as "gnupg/pwri-sample.*.p7m" into the
// names it matches; a pattern that matches nothing stays, to be reported.
func expandGlob(dir, folderName, name string) []string {
	if !strings.Contains(name, "*") {
		return []string{name}
	}
	for _, base := range []string{filepath.Join(dir, folderName), dir} {
		if m, _ := filepath.Glob(filepath.Join(base, name)); len(m) > 0 {
			for i := range m {
				m[i], _ = filepath.Rel(base, m[i])
			}
			return m
		}
	}
	return []string{name}
}

// resolve finds a file the manifest names: relative to its folder, to the
// corpus root, or once anywhere below the folder.
func resolve(dir, folderName, name string) (string, bool) {
	for _, p := range []string{filepath.Join(folderName, name), name} {
		if _, err := os.Stat(filepath.Join(dir, p)); err == nil {
			return filepath.ToSlash(p), true
		}
	}
	var found []string
	_ = filepath.WalkDir(filepath.Join(dir, folderName), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() == filepath.Base(name) {
			rel, _ := filepath.Rel(dir, p)
			found = append(found, filepath.ToSlash(rel))
		}
		return nil
	})
	if len(found) == 1 {
		return found[0], true
	}
	return "", false
}

// isMessage tells messages (which need an expectation) from keys and certificates.
func isMessage(path string, data []byte) bool {
	switch filepath.Ext(path) {
	case ".eml", ".mbox", ".env", ".p7m":
		return true
	case ".pem":
		return bytes.HasPrefix(data, []byte("-----BEGIN CMS-----"))
	}
	return false
}

var tokenRE = regexp.MustCompile(`^(decrypt|verify):(OK|FAIL)(?:.*sig-only\(-noverify\): (OK|FAIL))?$`)

// parseCell reads "decrypt:OK ; verify:FAIL ... / sig-only(-noverify): OK ;
// content:text/plain: This is ...".
func parseCell(cell string) (want, bool) {
	var w want
	for tok := range strings.SplitSeq(cell, " ; ") {
		tok = strings.TrimSpace(tok)
		if rest, ok := strings.CutPrefix(tok, "content:"); ok {
			ct, text, ok := strings.Cut(rest, ": ")
			if !ok {
				return w, false
			}
			w.contentType, w.text = ct, text
			continue
		}
		m := tokenRE.FindStringSubmatch(tok)
		if m == nil {
			return w, false
		}
		w.layers = append(w.layers, layer{decrypt: m[1] == "decrypt", ok: m[2] == "OK", sigOnly: m[3] == "OK"})
	}
	return w, len(w.layers) > 0
}

func TestInterop(t *testing.T) {
	dir := testutil.InteropDir(t)
	rows := readManifest(t, dir)
	if len(rows) < 100 {
		t.Fatalf("only %d rows read from MANIFEST.md; has its layout changed?", len(rows))
	}
	type entry struct {
		folder string
		want   want
		from   string // where the expectation comes from
	}
	cases := map[string]*entry{}
	var order []string
	for _, r := range rows {
		path, ok := resolve(dir, r.folder, r.file)
		if !ok {
			t.Errorf("MANIFEST.md names %q (under %s/), which is not in the corpus", r.file, r.folder)
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, path))
		if err != nil || !isMessage(path, data) {
			continue
		}
		e := cases[path]
		if e == nil {
			e = &entry{folder: filepath.ToSlash(filepath.Dir(path))}
			cases[path] = e
			order = append(order, path)
		}
		if w, ok := parseCell(r.cell); ok && e.from == "" {
			e.want, e.from = w, "manifest"
		}
	}
	for path, w := range overrides {
		e := cases[path]
		if e == nil {
			t.Errorf("override for %s, which MANIFEST.md does not name", path)
			continue
		}
		e.want, e.from = w, "override"
	}
	seen := map[string]int{}
	for _, path := range order {
		e := cases[path]
		if e.from == "" {
			t.Errorf("%s: MANIFEST.md names it, but neither an OpenSSL layers row nor an override covers it", path)
			continue
		}
		top := strings.SplitN(path, "/", 2)[0]
		facts, ok := folderFacts[e.folder]
		if !ok {
			facts, ok = folderFacts[top]
		}
		if !ok {
			t.Errorf("%s: no folder facts for %s", path, e.folder)
			continue
		}
		seen[top]++
		t.Run(path, func(t *testing.T) {
			if e.want.divergence != "" {
				t.Logf("differs from the manifest's OpenSSL check: %s", e.want.divergence)
			}
			checkInterop(t, dir, path, facts, e.want)
		})
	}
	t.Logf("interop messages per folder: %v", seen)
}

func checkInterop(t *testing.T, dir, path string, facts folder, w want) {
	msg, err := os.ReadFile(filepath.Join(dir, path))
	if err != nil {
		t.Fatal(err)
	}
	// An mbox envelope line is the caller's business.
	if bytes.HasPrefix(msg, []byte("From ")) {
		msg = msg[bytes.IndexByte(msg, '\n')+1:]
	}
	if w.wrap != "" {
		msg = wrapCMS(t, msg, w.wrap)
	}
	opts := &smime.OpenOptions{Verify: smime.VerifyOptions{Time: facts.at, Roots: x509.NewCertPool()}}
	if facts.at.IsZero() {
		opts.Verify.Time = time.Now()
	}
	for _, r := range facts.roots {
		for _, c := range readCerts(t, filepath.Join(dir, r)) {
			opts.Verify.Roots.AddCert(c)
		}
	}
	for _, k := range facts.known {
		opts.Verify.Certificates = append(opts.Verify.Certificates, readCerts(t, filepath.Join(dir, k))...)
	}
	for _, k := range facts.keys {
		opts.Keys = append(opts.Keys, smime.KeyPair{Cert: readCerts(t, filepath.Join(dir, k[1]))[0], Key: readKey(t, filepath.Join(dir, k[0]))})
	}

	o, err := smime.Open(msg, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Logf("signatures %v; encrypted %v, decrypted %v (%v); header protection %q", statuses(o.Signatures), o.Encrypted, o.Decrypted, o.DecryptErr, o.HeaderProtection)
	if facts.protected != "" && strings.HasPrefix(path, facts.protected) {
		if o.HeaderProtection == "" || o.ProtectedHeaders.Get("Subject") == "" {
			t.Errorf("no protected headers reported (%q)", o.HeaderProtection)
		}
	}
	if w.unchanged && !bytes.Equal(o.Message, msg) {
		t.Errorf("message served changed; want it as it is")
	}
	if w.encrypted && (!o.Encrypted || o.Decrypted) {
		t.Errorf("encrypted %v decrypted %v (%v), want encrypted and closed", o.Encrypted, o.Decrypted, o.DecryptErr)
	}
	if w.noDecrypt != nil && !errors.Is(o.DecryptErr, w.noDecrypt) {
		t.Errorf("DecryptErr = %v, want %v", o.DecryptErr, w.noDecrypt)
	}
	if w.encrypted && o.DecryptErr == nil {
		t.Error("no DecryptErr for a closed layer")
	}
	if w.part > 0 {
		if len(o.Signatures) != 0 || o.Encrypted {
			t.Errorf("the container was treated as S/MIME: %d signatures, encrypted %v", len(o.Signatures), o.Encrypted)
		}
		msg = partAsMessage(t, msg, w.part)
		if o, err = smime.Open(msg, opts); err != nil {
			t.Fatalf("Open(part %d): %v", w.part, err)
		}
	}
	switch {
	case w.statuses != nil:
		wantStatus(t, "Open", o.Signatures, w.statuses...)
	case !w.encrypted:
		checkLayers(t, path, o, w.layers)
	}
	if w.contentType != "" || w.text != "" {
		ct, text := servedContent(t, o.Message)
		if w.contentType != "" && ct != w.contentType {
			t.Errorf("served content type %s, want %s", ct, w.contentType)
		}
		if !strings.HasPrefix(collapse(text), collapse(w.text)) {
			t.Errorf("served text %q, want it to begin %q", firstN(collapse(text), 80), w.text)
		}
	}
	// SHA-1 signatures are weak by default and pass when allowed.
	weak := false
	for _, s := range o.Signatures {
		weak = weak || s.Status == smime.StatusWeak
	}
	if weak {
		opts.Verify.AllowSHA1 = true
		o2, err := smime.Open(msg, opts)
		if err != nil {
			t.Fatal(err)
		}
		k := 0
		for i, s := range o2.Signatures {
			if o.Signatures[i].Status != smime.StatusWeak {
				continue
			}
			want := smime.StatusValid
			if k < len(w.sha1Allowed) {
				want = w.sha1Allowed[k]
			}
			k++
			if s.Status != want {
				t.Errorf("signature %d with AllowSHA1: %v (%s), want %v", i, s.Status, s.Reason, want)
			}
		}
	}
	if ar := o.AuthenticationResults("test.example"); !strings.HasPrefix(ar, "test.example; smime=") {
		t.Errorf("AuthenticationResults = %q", ar)
	}
}

// checkLayers maps the manifest's layers onto Opened: decrypt:OK means
// decrypted; each verify is one signature, outermost first.
func checkLayers(t *testing.T, path string, o *smime.Opened, layers []layer) {
	t.Helper()
	var verifies []layer
	decrypts := 0
	for _, l := range layers {
		if l.decrypt {
			decrypts++
			if l.ok != o.Decrypted {
				t.Errorf("decrypted = %v (%v), want %v", o.Decrypted, o.DecryptErr, l.ok)
			}
			continue
		}
		verifies = append(verifies, l)
	}
	if decrypts == 0 && o.Encrypted {
		t.Errorf("reported as encrypted (%v)", o.DecryptErr)
	}
	var got []string
	for _, s := range o.Signatures {
		got = append(got, s.Status.String()+" ("+s.Reason+")")
	}
	if len(o.Signatures) != len(verifies) {
		t.Fatalf("signatures %q, want %d layers", got, len(verifies))
	}
	sha1Name := strings.Contains(path, ".SHA1.")
	for i, l := range verifies {
		s := o.Signatures[i]
		if sha1Name && s.Hash != crypto.SHA1 {
			t.Errorf("signature %d: hash %v, the file name says SHA-1", i, s.Hash)
		}
		switch {
		case l.ok:
			want := smime.StatusValid
			if s.Hash == crypto.SHA1 {
				want = smime.StatusWeak // Thunderbird: sig_good=false
			}
			if s.Status != want {
				t.Errorf("signature %d: %s, want %v", i, got[i], want)
			}
		case l.sigOnly:
			switch s.Status {
			case smime.StatusUntrusted, smime.StatusExpired, smime.StatusAddressMismatch:
			default:
				t.Errorf("signature %d: %s, want a certificate failure over a good signature", i, got[i])
			}
		default:
			if s.Status != smime.StatusInvalid && !(s.Status == smime.StatusUnknownSigner && s.Signer == nil) {
				t.Errorf("signature %d: %s, want invalid (or unknown-signer)", i, got[i])
			}
		}
	}
}

// wrapCMS puts a raw CMS object (DER, or PEM "CMS") in a MIME message.
func wrapCMS(t *testing.T, data []byte, smimeType string) []byte {
	t.Helper()
	if b, _ := pem.Decode(data); b != nil {
		data = b.Bytes
	}
	enc := base64.StdEncoding.EncodeToString(data)
	var b strings.Builder
	b.WriteString("From: test@example.com\r\nSubject: wrapped\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: application/pkcs7-mime; smime-type=" + smimeType + "; name=smime.p7m\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\n")
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n")
	return []byte(b.String())
}

// partAsMessage returns the message with part n of its top-level multipart
// put in place of the body.
func partAsMessage(t *testing.T, msg []byte, n int) []byte {
	t.Helper()
	h, body := readMsg(t, msg)
	_, params, _ := mime.ParseMediaType(h.Get("Content-Type"))
	mr := textproto.NewMultipartReader(bytes.NewReader(body), params["boundary"])
	for i := 1; ; i++ {
		p, err := mr.NextPart()
		if err != nil {
			t.Fatalf("part %d: %v", n, err)
		}
		if i < n {
			continue
		}
		partBody, _ := io.ReadAll(p)
		var out bytes.Buffer
		for f := h.Fields(); f.Next(); {
			if !strings.HasPrefix(strings.ToLower(f.Key()), "content-") {
				out.WriteString(f.Key() + ": " + f.Value() + "\r\n")
			}
		}
		_ = textproto.WriteHeader(&out, p.Header)
		out.Write(partBody)
		return out.Bytes()
	}
}

func readMsg(t *testing.T, msg []byte) (textproto.Header, []byte) {
	t.Helper()
	r := bufio.NewReader(bytes.NewReader(msg))
	h, err := textproto.ReadHeader(r)
	if err != nil {
		t.Fatalf("served message header: %v", err)
	}
	body, _ := io.ReadAll(r)
	return h, body
}

// servedContent returns the media type of what a reader sees in the served
// message (the first part of a multipart/signed) and the text of its first
// text/plain part (or first text part), decoded.
func servedContent(t *testing.T, msg []byte) (string, string) {
	t.Helper()
	h, body := readMsg(t, msg)
	ct, params, _ := mime.ParseMediaType(h.Get("Content-Type"))
	for ct == "multipart/signed" {
		p, err := textproto.NewMultipartReader(bytes.NewReader(body), params["boundary"]).NextPart()
		if err != nil {
			t.Fatalf("multipart/signed: %v", err)
		}
		h = p.Header
		body, _ = io.ReadAll(p)
		ct, params, _ = mime.ParseMediaType(h.Get("Content-Type"))
	}
	if ct == "" {
		ct = "text/plain"
	}
	var plain, any string
	walkText(h, body, 0, &plain, &any)
	if plain != "" {
		return ct, plain
	}
	return ct, any
}

func walkText(h textproto.Header, body []byte, depth int, plain, any *string) {
	if depth > 10 || *plain != "" {
		return
	}
	ct, params, _ := mime.ParseMediaType(h.Get("Content-Type"))
	if ct == "" {
		ct = "text/plain"
	}
	switch {
	case strings.HasPrefix(ct, "multipart/"):
		mr := textproto.NewMultipartReader(bytes.NewReader(body), params["boundary"])
		for {
			p, err := mr.NextPart()
			if err != nil {
				return
			}
			b, _ := io.ReadAll(p)
			walkText(p.Header, b, depth+1, plain, any)
		}
	case ct == "message/rfc822":
		r := bufio.NewReader(bytes.NewReader(body))
		if ih, err := textproto.ReadHeader(r); err == nil {
			b, _ := io.ReadAll(r)
			walkText(ih, b, depth+1, plain, any)
		}
	case strings.HasPrefix(ct, "text/"):
		text := decodeText(h, body, params["charset"])
		if ct == "text/plain" && *plain == "" {
			*plain = text
		}
		if *any == "" {
			*any = text
		}
	}
}

func decodeText(h textproto.Header, body []byte, charset string) string {
	switch strings.ToLower(strings.TrimSpace(h.Get("Content-Transfer-Encoding"))) {
	case "base64":
		b, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(string(body)), ""))
		if err == nil {
			body = b
		}
	case "quoted-printable":
		if b, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(body))); err == nil {
			body = b
		}
	}
	switch strings.ToLower(charset) {
	case "iso-8859-1", "latin1", "windows-1252":
		runes := make([]rune, len(body))
		for i, c := range body {
			runes[i] = rune(c)
		}
		return string(runes)
	}
	return string(body)
}

func statuses(sigs []*smime.Signature) []string {
	var out []string
	for _, s := range sigs {
		out = append(out, s.Status.String()+" ("+s.Reason+")")
	}
	return out
}

func collapse(s string) string { return strings.Join(strings.Fields(s), " ") }

func firstN(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func readCerts(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		t.Fatalf("%s: no certificate", path)
	}
	return out
}

func readKey(t *testing.T, path string) crypto.PrivateKey {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatalf("%s: no PEM", path)
	}
	if k, err := x509.ParsePKCS8PrivateKey(b.Bytes); err == nil {
		return k
	}
	if k, err := x509.ParsePKCS1PrivateKey(b.Bytes); err == nil {
		return k
	}
	k, err := x509.ParseECPrivateKey(b.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return k
}
