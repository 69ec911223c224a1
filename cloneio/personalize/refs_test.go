package personalize

import (
	"strings"
	"testing"
)

func TestReplaceIDs(t *testing.T) {
	ids := IDMap{
		"efa12db3-28f2-4bb5-8574-b76745959b31": "11111111-2222-4333-8444-555555555555",
		"ab7a2344-e553-48a8-89da-d7984b3469fa": "66666666-7777-4888-8999-aaaaaaaaaaaa",
		"1234-ABCD":                            "9876-FEDC",
	}
	in := strings.Join([]string{
		"# a comment naming efa12db3-28f2-4bb5-8574-b76745959b31 is a reference too",
		"UUID=efa12db3-28f2-4bb5-8574-b76745959b31 / ext4 defaults 0 1",
		"UUID=1234-abcd /boot/efi vfat umask=0077 0 1",
		"PARTUUID=AB7A2344-E553-48A8-89DA-D7984B3469FA /srv ext4 defaults 0 2",
		"/dev/disk/by-uuid/efa12db3-28f2-4bb5-8574-b76745959b31 /x ext4 defaults 0 2",
		"	search --no-floppy --fs-uuid --set=root efa12db3-28f2-4bb5-8574-b76745959b31",
		"	linux /vmlinuz root=PARTUUID=ab7a2344-e553-48a8-89da-d7984b3469fa ro",
		"UUID=efa12db3-28f2-4bb5-8574-b76745959b3100 longer token stays",
		"xefa12db3-28f2-4bb5-8574-b76745959b31 prefixed by a hex char stays? no: x is not hex",
		"aefa12db3-28f2-4bb5-8574-b76745959b31 prefixed by hex stays",
		"",
	}, "\n")
	out, ch := ReplaceIDs(in, ids)
	want := []string{
		"# a comment naming 11111111-2222-4333-8444-555555555555 is a reference too",
		"UUID=11111111-2222-4333-8444-555555555555 / ext4 defaults 0 1",
		"UUID=9876-fedc /boot/efi vfat umask=0077 0 1",
		"PARTUUID=66666666-7777-4888-8999-AAAAAAAAAAAA /srv ext4 defaults 0 2",
		"/dev/disk/by-uuid/11111111-2222-4333-8444-555555555555 /x ext4 defaults 0 2",
		"	search --no-floppy --fs-uuid --set=root 11111111-2222-4333-8444-555555555555",
		"	linux /vmlinuz root=PARTUUID=66666666-7777-4888-8999-aaaaaaaaaaaa ro",
		"UUID=efa12db3-28f2-4bb5-8574-b76745959b3100 longer token stays",
		"x11111111-2222-4333-8444-555555555555 prefixed by a hex char stays? no: x is not hex",
		"aefa12db3-28f2-4bb5-8574-b76745959b31 prefixed by hex stays",
		"",
	}
	if got := strings.Split(out, "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		for i := range want {
			if i < len(got) && got[i] != want[i] {
				t.Errorf("line %d:\n got %s\nwant %s", i+1, got[i], want[i])
			}
		}
	}
	if len(ch) != 8 || ch[0].Line != 1 || ch[7].Line != 9 {
		t.Errorf("changes %+v", ch)
	}
	if out2, ch2 := ReplaceIDs(out, ids); out2 != out || len(ch2) != 0 {
		t.Errorf("a second run changed %v", ch2)
	}
	if _, ch := ReplaceIDs("no newline at end UUID=1234-ABCD", ids); len(ch) != 1 || ch[0].New != "no newline at end UUID=9876-FEDC" {
		t.Errorf("%+v", ch)
	}
}

func TestSetHosts(t *testing.T) {
	cases := []struct{ name, in, old, new, want string }{
		{"debian", "127.0.0.1\tlocalhost\n127.0.1.1\tgolden\n::1 localhost\n", "golden", "lab-1",
			"127.0.0.1\tlocalhost\n127.0.1.1\tlab-1\n::1 localhost\n"},
		{"fqdn", "127.0.1.1 golden.example.org golden # me\n", "golden.example.org", "lab-2.example.org",
			"127.0.1.1\tlab-2.example.org lab-2 # me\n"},
		{"other line", "10.0.0.5 golden\n", "golden", "lab-3", "10.0.0.5\tlab-3\n"},
		{"none", "127.0.0.1 localhost\n::1 localhost\n", "golden", "lab-4", "127.0.0.1 localhost\n127.0.1.1\tlab-4\n::1 localhost\n"},
		{"empty", "", "golden", "lab-5", "127.0.1.1\tlab-5\n"},
		{"unchanged", "127.0.1.1\tlab-6\n", "lab-6", "lab-6", "127.0.1.1\tlab-6\n"},
	}
	for _, c := range cases {
		got, ch := SetHosts(c.in, c.old, c.new)
		if got != c.want {
			t.Errorf("%s: got %q, want %q", c.name, got, c.want)
		}
		if (c.in == c.want) != (len(ch) == 0) {
			t.Errorf("%s: changes %+v", c.name, ch)
		}
	}
}

func TestExpandHostname(t *testing.T) {
	for _, c := range []struct {
		tmpl, mac, want string
		n               int
	}{
		{"lab-{n}", "", "lab-7", 7},
		{"lab-{n:03}", "", "lab-007", 7},
		{"pc-{mac}", "52:54:00:AB:cd:01", "pc-525400abcd01", -1},
		{"plain", "", "plain", -1},
	} {
		got, err := ExpandHostname(c.tmpl, c.n, c.mac)
		if err != nil || got != c.want {
			t.Errorf("%s: %q %v, want %q", c.tmpl, got, err, c.want)
		}
	}
	for _, bad := range []string{"lab-{n}", "lab-{x}", "-bad", "a_b", strings.Repeat("a", 64)} {
		if _, err := ExpandHostname(bad, -1, ""); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestParseHostnameCSV(t *testing.T) {
	m, err := ParseHostnameCSV("mac,hostname\n52:54:00:00:00:01, lab-a\n# comment\n\n52-54-00-00-00-02,lab-b\n")
	if err != nil || m["52:54:00:00:00:01"] != "lab-a" || m["52:54:00:00:00:02"] != "lab-b" || len(m) != 2 {
		t.Fatalf("%v %v", m, err)
	}
	for _, bad := range []string{"", "52:54:00:00:00:01,lab-a\nnot-a-mac,x\n", "52:54:00:00:00:01,bad_name\n",
		"52:54:00:00:00:01,a\n52:54:00:00:00:01,b\n"} {
		if _, err := ParseHostnameCSV(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
