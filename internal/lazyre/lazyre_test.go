package lazyre

import "testing"

func TestCompiledOnFirstUseOnly(t *testing.T) {
	r := New(`^[a-z]{1,3}$`)
	if r.re != nil {
		t.Fatal("compiled before use")
	}
	if !r.MatchString("abc") || r.MatchString("abcd") {
		t.Fatal("wrong match")
	}
	first := r.re
	if r.Get() != first {
		t.Fatal("compiled twice")
	}
	if got := New(`(\d)`).FindAllStringSubmatch("a1b2", -1); len(got) != 2 || got[1][1] != "2" {
		t.Fatalf("FindAllStringSubmatch = %v", got)
	}
}

func TestInvalidExpressionPanicsOnUse(t *testing.T) {
	r := New(`(`)
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	r.MatchString("x")
}
