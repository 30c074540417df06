// Run inside a built image (node -e, its text read by opskit/images.py): require every module
// named in argv, stop at the first that fails, naming it.
for (const check of process.argv.slice(1)) {
  try { require(check); } catch (e) {
    console.log(`import check failed: ${check}: ${e.code || e.name}: ${e.message.split("\n")[0]}`);
    process.exit(1);
  }
  console.log(`ok ${check}`);
}
