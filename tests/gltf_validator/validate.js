// Validates each GLB named on the command line with the Khronos glTF validator; prints one JSON
// report per file ({file, errors, warnings, infos, messages}) as a JSON list.
const fs = require("fs");
const validator = require("gltf-validator");

async function main() {
  const reports = [];
  for (const file of process.argv.slice(2)) {
    const report = await validator.validateBytes(new Uint8Array(fs.readFileSync(file)), {
      uri: file, maxIssues: 100, writeTimestamp: false,
    });
    reports.push({
      file,
      errors: report.issues.numErrors,
      warnings: report.issues.numWarnings,
      infos: report.issues.numInfos,
      messages: report.issues.messages,
      info: report.info,
    });
  }
  process.stdout.write(JSON.stringify(reports));
}

main().catch((error) => { console.error(error); process.exit(2); });
