package ca

// DefaultPKCS11KeyLabel is the label of the root key pair in a PKCS#11
// token when PKCS11Config.KeyLabel is empty.
const DefaultPKCS11KeyLabel = "bulwark-ca-root"

// PKCS11Config locates the root key in a PKCS#11 token. PKCS#11 support
// needs a cgo build; without cgo the functions using it return an error.
type PKCS11Config struct {
	Module     string // path of the PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so
	TokenLabel string
	PIN        string // the user PIN; never logged
	KeyLabel   string // default DefaultPKCS11KeyLabel
}
