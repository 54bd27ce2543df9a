// The M2M flow with the official Scalekit Node SDK, unchanged, against the environment URL and
// credentials in SCALEKIT_ENVIRONMENT_URL / SCALEKIT_CLIENT_ID / SCALEKIT_CLIENT_SECRET.
// Prints one JSON object: each step's answer, or the SDK's error (gRPC status, error code,
// message, field violations). Run by tests/issuer/test_scalekit_node.py.
'use strict';
const { ScalekitClient } = require('@scalekit-sdk/node');

const org = process.env.ORGANIZATION_ID;
const results = {};

function failure(error) {
  const details = (error.unpackedDetails || []).map((info) => ({
    errorCode: info.errorCode,
    violations: ((info.validationErrorInfo || {}).fieldViolations || []).map(
      (v) => ({ field: v.field, description: v.description })),
  }));
  return { error: error.constructor.name, grpcStatus: error.grpcStatus,
           errorCode: error.errorCode, message: error.message, details };
}

async function step(name, run) {
  try {
    results[name] = { ok: await run() };
  } catch (error) {
    results[name] = failure(error);
  }
  return results[name].ok;
}

async function main() {
  const scalekit = new ScalekitClient(process.env.SCALEKIT_ENVIRONMENT_URL,
    process.env.SCALEKIT_CLIENT_ID, process.env.SCALEKIT_CLIENT_SECRET);
  const m2m = scalekit.m2m;
  const created = await step('create', async () => {
    const answer = await m2m.createOrganizationClient(org, {
      name: 'GitHub Actions deployer', description: 'Deploys from CI',
      scopes: ['deploy:applications', 'read:deployments'],
      audience: ['deployment-api.acmecorp.com'],
      customClaims: { github_repository: 'acmecorp/inventory-service' },
    });
    return { clientId: answer.client.clientId, plainSecret: answer.plainSecret,
             scopes: answer.client.scopes, secrets: answer.client.secrets.length,
             customClaims: answer.client.customClaims.map((c) => [c.key, c.value]) };
  });
  if (!created) {
    process.stdout.write(JSON.stringify(results));
    return;
  }
  const { clientId, plainSecret } = created;
  await step('get', async () => {
    const answer = await m2m.getOrganizationClient(org, clientId);
    return { clientId: answer.client.clientId, name: answer.client.name,
             organizationId: answer.client.organizationId };
  });
  await step('list', async () => {
    const answer = await m2m.listOrganizationClients(org, { pageSize: 10 });
    return { total: answer.totalSize, ids: answer.clients.map((c) => c.clientId) };
  });
  const token = await step('token', () => scalekit.generateClientToken(clientId, plainSecret));
  await step('validate', () => scalekit.validateAccessToken(token, {
    issuer: process.env.SCALEKIT_ENVIRONMENT_URL, audience: ['deployment-api.acmecorp.com'],
    requiredScopes: ['deploy:applications'] }));
  await step('validateMissingScope', () => scalekit.validateAccessToken(token, {
    requiredScopes: ['admin:everything'] }));
  await step('update', async () => {
    const answer = await m2m.updateOrganizationClient(org, clientId,
      { scopes: ['read:deployments'] });
    return { scopes: answer.client.scopes };
  });
  await step('narrowedToken', async () => {
    const narrowed = await scalekit.generateClientToken(clientId, plainSecret);
    return scalekit.validateAccessToken(narrowed, { requiredScopes: ['deploy:applications'] });
  });
  const added = await step('addSecret', async () => {
    const answer = await m2m.addOrganizationClientSecret(org, clientId);
    return { secretId: answer.secret.id, plainSecret: answer.plainSecret };
  });
  await step('tokenWithNewSecret', async () =>
    (await scalekit.generateClientToken(clientId, added.plainSecret)).split('.').length);
  await step('removeSecret', async () => {
    const before = await m2m.getOrganizationClient(org, clientId);
    const old = before.client.secrets.find((s) => s.id !== added.secretId);
    await m2m.removeOrganizationClientSecret(org, clientId, old.id);
    return { removed: old.id };
  });
  await step('tokenWithOldSecret', () => scalekit.generateClientToken(clientId, plainSecret));
  await step('unknownOrganization', () => m2m.getOrganizationClient('org_404404404', clientId));
  await step('badInput', () => m2m.createOrganizationClient(org, {
    name: 'x', scopes: ['has space'] }));
  await step('badOrganizationId', () => m2m.listOrganizationClients('not-an-org'));
  await step('delete', async () => {
    await m2m.deleteOrganizationClient(org, clientId);
    return true;
  });
  await step('getDeleted', () => m2m.getOrganizationClient(org, clientId));
  await step('wrongEnvironmentSecret', async () => {
    const wrong = new ScalekitClient(process.env.SCALEKIT_ENVIRONMENT_URL,
      process.env.SCALEKIT_CLIENT_ID, 'skcs_wrong_wrong_wrong_wrong');
    return wrong.m2m.listOrganizationClients(org);
  });
  process.stdout.write(JSON.stringify(results));
}

main().catch((error) => {
  process.stderr.write(`${error && error.stack ? error.stack : error}\n`);
  process.exit(1);
});
