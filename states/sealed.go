package states

import (
	"strings"
)

// A job's --var values and --var-file files travel in the signed job, which every minion the job
// addresses can open. The values of sensitive variables must not: the master moves them
// into the payload it seals to each minion's key (with the secrets), under these reserved names,
// and the minion moves them back before it compiles. NUL cannot start a secret's name in the
// secrets file.
const (
	sealedVarPrefix     = "\x00var:"
	sealedVarFilePrefix = "\x00var-file:"
)

// SealInputs splits a job's variables: those the bundle declares sensitive (set by --var, or in a
// --var-file that sets one; such a file is sealed whole) go into sealed, keyed for the sealed
// payload; the rest stay in vars and varFiles, which travel in the clear job.
func SealInputs(m *Module, vars map[string]string, varFiles map[string][]byte) (map[string]string, map[string][]byte, map[string]string) {
	if len(vars) == 0 && len(varFiles) == 0 {
		return vars, varFiles, nil
	}
	names := m.SensitiveVariables
	if len(names) == 0 {
		return vars, varFiles, nil
	}
	sensitive := map[string]bool{}
	for _, n := range names {
		sensitive[n] = true
	}
	sealed := map[string]string{}
	publicVars := map[string]string{}
	for k, v := range vars {
		if sensitive[k] {
			sealed[sealedVarPrefix+k] = v
		} else {
			publicVars[k] = v
		}
	}
	publicFiles := map[string][]byte{}
	for fn, data := range varFiles {
		f, d := parseConfig(data, fn)
		setsSensitive := d.HasErrors() // unreadable: the minion reports it; sealed, to be safe
		if f != nil {
			attrs, _ := f.Body.JustAttributes()
			for name := range attrs {
				setsSensitive = setsSensitive || sensitive[name]
			}
		}
		if setsSensitive {
			sealed[sealedVarFilePrefix+fn] = string(data)
		} else {
			publicFiles[fn] = data
		}
	}
	if len(vars) == 0 {
		publicVars = vars
	}
	if len(varFiles) == 0 {
		publicFiles = varFiles
	}
	return publicVars, publicFiles, sealed
}

// OpenInputs is SealInputs undone on the minion: from the opened sealed payload it takes the
// sensitive variables back into vars and varFiles, and returns the secrets alone.
func OpenInputs(payload, vars map[string]string, varFiles map[string][]byte) (secrets, outVars map[string]string, outFiles map[string][]byte) {
	secrets = map[string]string{}
	outVars, outFiles = vars, varFiles
	copied := false
	for k, v := range payload {
		name, isVar := strings.CutPrefix(k, sealedVarPrefix)
		file, isFile := strings.CutPrefix(k, sealedVarFilePrefix)
		if !isVar && !isFile {
			secrets[k] = v
			continue
		}
		if !copied {
			outVars, outFiles = map[string]string{}, map[string][]byte{}
			for a, b := range vars {
				outVars[a] = b
			}
			for a, b := range varFiles {
				outFiles[a] = b
			}
			copied = true
		}
		if isVar {
			outVars[name] = v
		} else {
			outFiles[file] = []byte(v)
		}
	}
	return secrets, outVars, outFiles
}
