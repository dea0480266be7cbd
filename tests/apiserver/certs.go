package apiserver

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// pki is what the control plane's TLS and tokens need, generated for each
// run: one CA that signs the serving certificate and the admin's client
// certificate (kube-apiserver's --client-ca-file), and the key pair that
// signs and verifies service-account tokens.
type pki struct {
	dir string
	// Paths of the PEM files.
	CAFile, ServingCert, ServingKey   string
	AdminCert, AdminKey               string
	SAPublicKeyFile, SAPrivateKeyFile string

	ca    *x509.Certificate
	caKey crypto.Signer
	now   time.Time
}

// AdminUser and AdminGroup are the identity of the admin's client
// certificate: system:masters passes every authorization check.
const (
	AdminUser  = "sluice-test-admin"
	AdminGroup = "system:masters"
)

// newPKI generates the CA, the certificates and keys into dir; the serving
// certificate holds sans besides loopback.
func newPKI(dir string, sans []net.IP) (*pki, error) {
	p := &pki{
		dir:    dir,
		CAFile: filepath.Join(dir, "ca.crt"), ServingCert: filepath.Join(dir, "apiserver.crt"), ServingKey: filepath.Join(dir, "apiserver.key"),
		AdminCert: filepath.Join(dir, "admin.crt"), AdminKey: filepath.Join(dir, "admin.key"),
		SAPublicKeyFile: filepath.Join(dir, "sa.pub"), SAPrivateKeyFile: filepath.Join(dir, "sa.key"),
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	now := time.Now()
	caKey, err := newKey()
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "sluice-test-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, ca, err := sign(caTmpl, caTmpl, caKey, caKey)
	if err != nil {
		return nil, err
	}
	if err := writePEM(p.CAFile, "CERTIFICATE", caDER); err != nil {
		return nil, err
	}
	p.ca, p.caKey, p.now = ca, caKey, now
	if err := p.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: append([]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, sans...),
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
	}, p.ServingCert, p.ServingKey); err != nil {
		return nil, err
	}
	if _, _, err := p.issueClient(AdminUser, []string{AdminGroup}); err != nil {
		return nil, err
	}

	saKey, err := newKey()
	if err != nil {
		return nil, err
	}
	if err := writeKey(p.SAPrivateKeyFile, saKey); err != nil {
		return nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(saKey.Public())
	if err != nil {
		return nil, err
	}
	if err := writePEM(p.SAPublicKeyFile, "PUBLIC KEY", pub); err != nil {
		return nil, err
	}
	return p, nil
}

// issue signs tmpl with the CA and writes the certificate and a new key.
func (p *pki) issue(tmpl *x509.Certificate, certFile, keyFile string) error {
	key, err := newKey()
	if err != nil {
		return err
	}
	tmpl.NotBefore, tmpl.NotAfter = p.now.Add(-time.Hour), p.now.Add(7*24*time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, _, err := sign(tmpl, p.ca, key, p.caKey)
	if err != nil {
		return err
	}
	if err := writePEM(certFile, "CERTIFICATE", der); err != nil {
		return err
	}
	return writeKey(keyFile, key)
}

// issueClient issues a client certificate for user in groups and returns
// its files (<dir>/<user>.crt and .key; the admin's are AdminCert and
// AdminKey).
func (p *pki) issueClient(user string, groups []string) (certFile, keyFile string, err error) {
	base := filepath.Join(p.dir, strings.NewReplacer(":", "-", "/", "-").Replace(user))
	certFile, keyFile = base+".crt", base+".key"
	if user == AdminUser {
		certFile, keyFile = p.AdminCert, p.AdminKey
	}
	err = p.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: user, Organization: groups},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, certFile, keyFile)
	return certFile, keyFile, err
}

func newKey() (*ecdsa.PrivateKey, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }

func sign(tmpl, parent *x509.Certificate, key, parentKey crypto.Signer) ([]byte, *x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, nil, err
	}
	tmpl.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		return nil, nil, fmt.Errorf("creating certificate %s: %w", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	return der, cert, err
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(path, "EC PRIVATE KEY", der)
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}
