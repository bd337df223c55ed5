// Command toworker runs shell commands and Go functions on many hosts over
// SSH, and copies files to and from them. It is cli.Main; see
// cli/README.md, or run `toworker --help`.
package main

import "github.com/toworker/toworker/cli"

func main() { cli.Main() }
